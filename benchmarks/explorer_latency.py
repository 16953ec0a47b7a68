"""The neuron explorer under load: run-page and search latency with concurrent clients on a store
of 100,000+ neurons, and the server's memory.

A synthetic store (``--layers`` x ``--d-mlp`` neurons, statistics and top-example token ids drawn
at random, 60% of the neurons with an explanation) is written to a temporary directory and served
by ``solulab serve --runs`` in its own process. ``--clients`` threads then each send
``--requests`` requests in turn: the run page, and ``/api/neurons`` sorted by a random column at
a random offset, filtered by layer and verdict, searched by explanation text and by token. Then
``/api/probe`` with 256 tokens, on a random 4-layer d_model 512 model (8,192 neurons), and the
static site of the store (``solulab site``), timed, with its size.

    python benchmarks/explorer_latency.py [--layers 4 --d-mlp 25600 --clients 20]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

from solulab import ModelConfig, Transformer
from solulab.neurons.store import write_store
from solulab.web.explorer import SORTABLE
from solulab.web.site import export_site

WORDS = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "the"]
KINDS = ["the token", "tokens after", "digits in", "closing brackets of", "indentation before",
         "the word", "string literals with", "names ending in"]


def synthetic_store(root: Path, name: str, layers: int, d_mlp: int, vocab: int = 4096,
                    k: int = 8, window: int = 5) -> Path:
    """A run directory ``root/name`` whose store has random statistics, top-example token ids
    and explanations for ``layers * d_mlp`` neurons."""
    rng = np.random.default_rng(0)
    tokenizer = Tokenizer(models.WordLevel({f"w{i}" if i >= len(WORDS) else WORDS[i]: i
                                            for i in range(vocab)}, unk_token="w10"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer_file = root / "tokenizer.json"
    tokenizer.save(str(tokenizer_file))
    arrays = {}
    for layer in range(layers):
        stats = np.stack([rng.gamma(2, 1, d_mlp), -rng.gamma(1, 0.1, d_mlp),
                          rng.normal(0, 0.01, d_mlp), rng.gamma(2, 0.1, d_mlp),
                          rng.gamma(2, 20, d_mlp), rng.uniform(0, 1, d_mlp),
                          rng.beta(1, 30, d_mlp)], 1)
        values = -np.sort(-rng.gamma(2, 1, (d_mlp, k)).astype(np.float32), axis=1)
        arrays[layer] = {"mid.stats": stats, "mid.top.values": values,
                         "mid.hist_counts": rng.integers(0, 1000, (d_mlp, 32)),
                         "mid.hist_width": stats[:, 0] / 16,
                         "mid.top.ids": rng.integers(0, vocab, (d_mlp, k, window), np.int32),
                         "mid.top.acts": rng.uniform(0, 1, (d_mlp, k, window)).astype(
                             np.float32) * values[:, :, None]}
    meta = {"model_sha256": "synthetic", "tokenizer_sha256": "synthetic", "act_fn": "solu_ln",
            "n_layers": layers, "layers": list(range(layers)), "d_mlp": d_mlp, "k": k,
            "window_before": window - 1, "window_after": 0, "samples": 0, "n_intervals": 0,
            "threshold": 0.5, "n_tokens": 1, "requested_tokens": 1, "n_ctx": 1, "split": "val",
            "seed": 0, "corpus": "synthetic", "points": ["mid"], "main_point": "mid",
            "logit_effects_complete": False}
    store = write_store(root / name / "neurons", meta, arrays, tokenizer_file)
    neurons = {}
    for layer in range(layers):
        for n in np.flatnonzero(rng.uniform(size=d_mlp) < 0.6):
            words = rng.choice(WORDS, 2)
            neurons[f"{layer}:{n}"] = {"description": f"{rng.choice(KINDS)} '{words[0]}' "
                                                      f"near '{words[1]}'",
                                       "interpretable": bool(rng.uniform() < 0.5),
                                       "auroc": float(rng.uniform(0.5, 1))}
    (store / "autointerp.json").write_text(json.dumps({"meta": {}, "neurons": neurons}))
    return store.parent


def probe_run(root: Path) -> Path:
    """A run with a model to probe: 4 layers, d_model 512, 2,048 neurons a layer, random weights."""
    run = synthetic_store(root, "probe", 4, 2048)
    cfg = ModelConfig(n_layers=4, d_model=512, n_heads=8, n_ctx=256, d_vocab=4096,
                      act_fn="solu_ln")
    Transformer(cfg).save_pretrained(run)
    shutil.copy(root / "tokenizer.json", run / "tokenizer.json")
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_for(rng: random.Random, layers: int, rows: int) -> tuple[str, str, dict]:
    kind = rng.choice(["page", "sort", "filter", "search", "token"])
    if kind == "page":
        return kind, "/run", {"run": "big"}
    params = {"run": "big", "sort": rng.choice(SORTABLE), "order": rng.choice(["asc", "desc"]),
              "limit": 50, "offset": rng.randrange(0, rows, 50)}
    if kind == "filter":
        params.update(layer=rng.randrange(layers), interpretable=rng.choice(["true", "false"]),
                      offset=0)
    elif kind == "search":
        params.update(q=rng.choice(WORDS + KINDS), offset=0)
    elif kind == "token":
        params.update(token=rng.choice(WORDS), offset=0)
    return kind, "/api/neurons", params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-mlp", type=int, default=25_600)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    args = parser.parse_args()
    rows = args.layers * args.d_mlp
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        synthetic_store(Path(tmp), "big", args.layers, args.d_mlp)
        probe_run(Path(tmp))
        print(f"synthetic store: {rows:,} neurons in {time.perf_counter() - started:.1f} s")
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "solulab.cli", "serve", "--runs", tmp,
                                   "--port", str(port)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    httpx.get(base + "/", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            before = rss_mib(server.pid)
            started = time.perf_counter()
            httpx.get(base + "/api/neurons", params={"run": "big"}, timeout=120).raise_for_status()
            print(f"first request (builds the table): {time.perf_counter() - started:.2f} s; "
                  f"server memory {before:.0f} MiB before, {rss_mib(server.pid):.0f} MiB after")
            times: dict[str, list[float]] = {}
            lock = threading.Lock()

            def client(seed: int) -> None:
                rng = random.Random(seed)
                with httpx.Client(base_url=base, timeout=30) as http:
                    for _ in range(args.requests):
                        kind, path, params = request_for(rng, args.layers, rows)
                        start = time.perf_counter()
                        http.get(path, params=params).raise_for_status()
                        with lock:
                            times.setdefault(kind, []).append(time.perf_counter() - start)

            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
            total = sum(len(v) for v in times.values())
            print(f"{args.clients} clients x {args.requests} requests: {total / wall:.0f} "
                  f"requests/s; server memory {rss_mib(server.pid):.0f} MiB")
            print(f"{'request':<8} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
            everything = [t for v in times.values() for t in v]
            for kind, values in sorted(times.items()) + [("all", everything)]:
                q = (statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1
                     else values * 99)
                print(f"{kind:<8} {len(values):>5} {q[49] * 1e3:>8.1f} {q[98] * 1e3:>8.1f} "
                      f"{max(values) * 1e3:>8.1f}")
            text = " ".join(random.Random(0).choice(WORDS) for _ in range(256))
            probe_times = []
            for _ in range(11):
                start = time.perf_counter()
                answer = httpx.post(base + "/api/probe", params={"run": "probe"},
                                    json={"text": text}, timeout=120)
                answer.raise_for_status()
                probe_times.append(time.perf_counter() - start)
            print(f"probe of {len(answer.json()['tokens'])} tokens, 4 layers x 2,048 neurons: "
                  f"first {probe_times[0]:.2f} s (loads the model), then median "
                  f"{statistics.median(probe_times[1:]):.3f} s, max {max(probe_times[1:]):.3f} s")
        finally:
            server.terminate()
            server.wait(timeout=30)
        started = time.perf_counter()
        site = export_site([Path(tmp) / "big"], Path(tmp) / "site", progress=False)
        print(f"static site of {site.neurons:,} neurons: {time.perf_counter() - started:.1f} s, "
              f"{site.files:,} files, {site.bytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
