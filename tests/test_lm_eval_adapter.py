"""The lm-evaluation-harness adapter scores strings exactly as the model does."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from solulab import ModelConfig, Transformer
from solulab.data.tokenizer import load_tokenizer

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from solulab.evals.lm_eval_adapter import SolulabLM  # noqa: E402

DATA = Path(__file__).parent / "data" / "lm_eval"
N_CTX = 24


@pytest.fixture(scope="module")
def run(small_corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("lm_eval") / "run"
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, n_ctx=N_CTX, d_vocab=300,
                      act_fn="solu_ln", init_std=0.3)
    Transformer(cfg).save_pretrained(path)
    shutil.copy(small_corpus / "tokenizer.json", path / "tokenizer.json")
    return path


def request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def own_logprob(model, ids: list[int], n_cont: int) -> float:
    """Sum of the model's log-probabilities of the last ``n_cont`` tokens of ``ids``."""
    logits = model(torch.tensor([ids[:-1]]))[0].double()
    logprobs = logits.log_softmax(-1)
    return sum(logprobs[t - 1, ids[t]].item() for t in range(len(ids) - n_cont, len(ids)))


def test_loglikelihoods_equal_the_models_own(run):
    lm = SolulabLM(str(run), batch_size=3)
    model = Transformer.from_pretrained(run)
    tok = load_tokenizer(run / "tokenizer.json")
    pairs = [("the neuron fires on", " numbers"), ("def f(x):", " return x"),
             ("1,000 2,500 and", " hex 0xdeadbeef"), ("Paris London", " Berlin with commas"),
             ("x" * 200 + " the", " music")]  # the last needs its context cut to n_ctx
    got = lm.loglikelihood([request("loglikelihood", c, x) for c, x in pairs])
    for (context, continuation), (logprob, greedy) in zip(pairs, got):
        ctx = tok.encode(context).ids
        cont = tok.encode(context + continuation).ids[len(ctx):]
        ids = (ctx + cont)[-(N_CTX + 1):]
        assert logprob == pytest.approx(own_logprob(model, ids, len(cont)), abs=1e-4)
        logits = model(torch.tensor([ids[:-1]]))[0]
        expected_greedy = all(logits[t - 1].argmax().item() == ids[t]
                              for t in range(len(ids) - len(cont), len(ids)))
        assert greedy == expected_greedy


def test_rolling_loglikelihood_covers_every_token_once(run):
    lm = SolulabLM(str(run))
    model = Transformer.from_pretrained(run)
    text = "the neuron fires on numbers in lists " * 8  # longer than n_ctx
    ids = [lm.eot_id, *lm.encode(text)]
    assert len(ids) > 2 * N_CTX
    expected = 0.0
    for end in range(len(ids), 1, -N_CTX):
        begin = max(1, end - N_CTX)
        window = ids[max(0, end - N_CTX - 1):end]
        expected += own_logprob(model, window, end - begin)
    (got,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)])
    assert got == pytest.approx(expected, abs=1e-3)


def test_generation_is_greedy_and_stops_at_until(run):
    lm = SolulabLM(str(run))
    model = Transformer.from_pretrained(run)
    context = "def f(x):"
    ids = lm.encode(context)
    for _ in range(6):
        ids.append(int(model(torch.tensor([ids[-N_CTX:]]))[0, -1].argmax()))
    expected = lm.tokenizer.decode(ids[len(lm.encode(context)):], skip_special_tokens=False)
    (got,) = lm.generate_until([request("generate_until", context, {"max_gen_toks": 6,
                                                                    "until": ["\u0000"]})])
    assert got == expected
    stop = expected[len(expected) // 2:][:1] or "x"
    (cut,) = lm.generate_until([request("generate_until", context, {"max_gen_toks": 6,
                                                                    "until": [stop]})])
    assert cut == expected.split(stop)[0]


def test_harness_command_line_runs_a_local_task(run, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    task = (DATA / "solulab_local_mc.yaml").read_text().replace(
        "items.jsonl", str(DATA / "items.jsonl"))
    (tasks / "solulab_local_mc.yaml").write_text(task)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    out = tmp_path / "results"
    subprocess.run([sys.executable, "-m", "solulab.evals.lm_eval_adapter", "run",
                    "--model", "solulab", "--model_args", f"path={run}",
                    "--tasks", "solulab_local_mc", "--include_path", str(tasks),
                    "--output_path", str(out)], check=True, env=env, timeout=600,
                   capture_output=True)
    (result_file,) = list(out.rglob("results*.json"))
    result = json.loads(result_file.read_text())["results"]["solulab_local_mc"]

    lm = SolulabLM(str(run))
    items = [json.loads(line) for line in (DATA / "items.jsonl").read_text().splitlines()]
    correct = []
    for item in items:  # the harness joins question and choice with a space
        scores = [s for s, _ in lm.loglikelihood(
            [request("loglikelihood", item["question"], " " + c) for c in item["choices"]])]
        correct.append(scores.index(max(scores)) == item["answer"])
    accuracy = sum(correct) / len(correct)
    assert result["acc,none"] == pytest.approx(accuracy)
    stderr = (accuracy * (1 - accuracy) / (len(items) - 1)) ** 0.5  # the harness's sample s.e.
    assert result["acc_stderr,none"] == pytest.approx(stderr, rel=1e-6)


def test_device_given_both_ways_is_one_value(run):
    lm = SolulabLM.create_from_arg_string(f"path={run},device=cpu",
                                          {"device": "cuda", "batch_size": 4})
    assert lm.torch_device.type == "cpu" and lm.batch_size == 4


def adapter(run, *args, env_extra=None, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(Path(__file__).parent.parent), **(env_extra or {})}
    env.pop("HF_DATASETS_OFFLINE", None)
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "solulab.evals.lm_eval_adapter", "run",
                           "--model", "solulab", "--model_args", f"path={run},device=cpu",
                           *args], env=env, timeout=600, capture_output=True, text=True)


def test_the_shipped_task_runs_offline_and_a_network_task_is_refused_by_name(run, tmp_path):
    out = tmp_path / "results"
    done = adapter(run, "--tasks", "solulab_arithmetic", "--limit", "12", "--output_path",
                   str(out), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (result_file,) = list(out.rglob("results*.json"))
    result = json.loads(result_file.read_text())["results"]["solulab_arithmetic"]
    assert 0 <= result["acc,none"] <= 1
    started = time.monotonic()
    refused = adapter(run, "--tasks", "lambada_openai", tmp_path=tmp_path)
    assert refused.returncode == 2
    assert "task 'lambada_openai' cannot be loaded offline" in refused.stderr
    assert "Traceback" not in refused.stderr and time.monotonic() - started < 120
