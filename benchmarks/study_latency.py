"""Latency of the study's rating call under concurrent annotators, alone and with hostile
clients hammering the same server (bad bodies, forged tokens, oversized bodies) side by side.

    python benchmarks/study_latency.py --annotators 20 --items 30

Builds two small random models with neuron stores in a temporary directory, creates a study,
serves it with ``solulab serve --study`` and times every ``PUT .../ratings/...`` of every
annotator; prints p50, p99 and max in milliseconds for both rounds and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HOSTILE_BODIES = [b'{"label": "interpretable", "hypothesis": NaN}', b"\xff\xfe{",
                  b"[" * 20_000 + b"]" * 20_000, b"x" * 200_000]


def build_runs(root: Path) -> dict[str, Path]:
    from solulab import ModelConfig, Transformer
    from solulab.data import build_corpus
    from solulab.neurons.collect import collect
    from solulab.neurons.settings import StoreSettings

    rng = random.Random(0)
    words = "def return import class the of and to 1 2 3 x y ( ) : , .".split()
    text = root / "text"
    text.mkdir()
    for i in range(40):
        (text / f"{i}.txt").write_text(" ".join(rng.choice(words) for _ in range(400)))
    corpus = root / "corpus"
    build_corpus(corpus, sources=[text], vocab_size=300, val_fraction=0.2, progress=False)
    runs = {}
    for act in ("gelu", "solu_ln"):
        run = root / act
        model = Transformer(ModelConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=32,
                                        d_vocab=300, act_fn=act, init_std=0.3))
        model.save_pretrained(run)
        shutil.copy(corpus / "tokenizer.json", run / "tokenizer.json")
        (run / "run.json").write_text(json.dumps({"corpus": str(corpus),
                                                  "n_params": model.n_params()}))
        collect(run, n_tokens=1024, settings=StoreSettings(k=24), progress=False)
        runs[act] = run
    return runs


def serve(study: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "solulab.cli", "serve", "--study",
                                str(study), "--port", str(port)],
                               env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/static/style.css", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def one_round(url: str, tokens: dict[str, str], hostile: int) -> np.ndarray:
    """Every annotator rates every item concurrently; returns each rating call's seconds."""
    latencies, errors, done = [], [], threading.Event()

    def annotate(token: str) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for item in http.get(f"/api/study/{token}/items").json()["items"]:
                http.get(f"/api/study/{token}/items/{item['id']}")
                start = time.perf_counter()
                response = http.put(f"/api/study/{token}/ratings/{item['id']}",
                                    json={"label": "interpretable", "hypothesis": "x"})
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors.append(response.status_code)

    def attack() -> None:
        token = next(iter(tokens.values()))
        with httpx.Client(base_url=url, timeout=120) as http:
            while not done.is_set():
                for body in HOSTILE_BODIES:
                    http.put(f"/api/study/{token}/ratings/nope", content=body)
                    http.put("/api/study/forged/ratings/nope", content=body)

    attackers = [threading.Thread(target=attack) for _ in range(hostile)]
    annotators = [threading.Thread(target=annotate, args=(t,)) for t in tokens.values()]
    for t in attackers + annotators:
        t.start()
    for t in annotators:
        t.join()
    done.set()
    for t in attackers:
        t.join()
    if errors:
        raise RuntimeError(f"ratings refused: {errors[:5]}")
    return np.array(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--items", type=int, default=30, help="Neurons per model.")
    parser.add_argument("--hostile", type=int, default=2, help="Hostile clients, second round.")
    args = parser.parse_args()
    from solulab.study.create import create_study

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = build_runs(root)
        names = [f"a{i:02d}" for i in range(args.annotators)]
        rows = []
        rounds = (("annotators alone", 0), (f"+ {args.hostile} hostile", args.hostile))
        for label, hostile in rounds:
            study = create_study(runs, root / f"study-{hostile}.sqlite", args.items,
                                 annotators=names)
            process, url = serve(study.path)
            try:
                seconds = one_round(url, study.tokens, hostile)
            finally:
                process.terminate()
                process.wait(timeout=30)
            ms = seconds * 1000
            rows.append((label, len(ms), *np.percentile(ms, [50, 99]), ms.max()))
    print(f"{args.annotators} annotators x {2 * args.items} ratings each, "
          f"{os.cpu_count()} CPUs")
    print(f"{'round':<20} {'ratings':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, n, p50, p99, top in rows:
        print(f"{label:<20} {n:>8} {p50:>8.1f} {p99:>8.1f} {top:>8.1f}")
    print(f"p99 with hostile clients / alone: {rows[1][3] / rows[0][3]:.2f}")


if __name__ == "__main__":
    main()
