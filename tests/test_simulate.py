"""Simulators: the LM simulator's batched, windowed predictions equal a slow one-prefix-at-a-time
computation, for a solulab run and a Hugging Face directory; explain() scores what a simulator
predicts; the CLI records the simulator."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from solulab import ModelConfig, Transformer
from solulab.autointerp.explain import HeldOut, explain
from solulab.autointerp.rules import family, forms
from solulab.autointerp.simulate import LMSimulator, LocalLM, make_simulator
from solulab.cli import app as cli_app
from solulab.data import Corpus
from solulab.errors import SolulabError


def held_out_text(corpus_dir, n=120) -> HeldOut:
    corpus = Corpus(corpus_dir)
    ids = np.asarray(corpus.tokens("val")[:n])
    return HeldOut([corpus.decode([int(i)]) for i in ids], 40)


@pytest.fixture(scope="module")
def lm_run(small_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("simulator") / "lm"
    Transformer(ModelConfig(n_layers=1, d_model=32, n_heads=2, n_ctx=128, d_vocab=300,
                            act_fn="gelu", init_std=0.5)).save_pretrained(run)
    shutil.copy(small_corpus / "tokenizer.json", run / "tokenizer.json")
    return run


@pytest.fixture(scope="module")
def hf_dir(small_corpus, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("simulator") / "hf"
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=300, n_positions=128, n_embd=32, n_layer=1, n_head=2,
        bos_token_id=0, eos_token_id=0))
    model.save_pretrained(out)
    transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(small_corpus / "tokenizer.json")).save_pretrained(out)
    return out


def slow_predictions(simulator: LMSimulator, rule, tokens) -> np.ndarray:
    """Each token's prediction from its own forward pass over the prompt up to its tab."""
    values = []
    for ids, reads in simulator.prompts(rule.description, tokens):
        for position in reads:
            logits = simulator.lm.logits([ids[:position + 1]])[0, -1]
            values.append(simulator.expected_digits(logits))
    return np.array(values)


@pytest.mark.parametrize("which", ["lm_run", "hf_dir"])
def test_lm_simulator_equals_one_prefix_at_a_time(which, request, small_corpus):
    lm = LocalLM(request.getfixturevalue(which))
    simulator = LMSimulator(lm, tokens=60, batch_size=3)
    held = held_out_text(small_corpus)
    rule = forms(family(held.tokens[0]))
    windows = simulator.prompts(rule.description, held.tokens[:60])
    assert len(windows) > 1 and all(len(ids) <= lm.n_ctx for ids, _ in windows)
    assert sum(len(reads) for _, reads in windows) == 60
    tab = lm.encode("\t")[-1]
    assert all(ids[r] == tab and ids[r + 1] == simulator.digit_ids[0]
               for ids, reads in windows for r in reads)
    predicted = simulator.simulate(rule, held)
    assert predicted.shape == (60,) and ((predicted >= 0) & (predicted <= 9)).all()
    np.testing.assert_allclose(predicted, slow_predictions(simulator, rule, held.tokens[:60]),
                               atol=1e-4)
    assert predicted.std() > 0  # a random model still varies with its input


def test_explain_scores_what_the_simulator_predicts(small_corpus):
    held = held_out_text(small_corpus)
    rng = np.random.default_rng(0)
    acts = rng.normal(size=len(held.tokens))

    class Echo:
        name = "echo"

        def simulate(self, rule, held_out):
            return 2 * acts[:30] + 1  # a perfect simulation of the first 30 tokens

    examples = [(held.tokens[i:i + 3], 2) for i in range(20)]
    assert explain(examples, held, acts, 1.0, simulator=Echo()).simulation == pytest.approx(1)
    half = explain(examples, held, acts, 1.0).simulation
    assert half < 0.99


def test_simulator_errors(tmp_path, small_corpus):
    with pytest.raises(SolulabError, match="no config.json"):
        make_simulator(str(tmp_path))
    short = tmp_path / "short"
    Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=16, d_vocab=300,
                            act_fn="gelu")).save_pretrained(short)
    with pytest.raises(SolulabError, match="no tokenizer.json"):
        make_simulator(str(short))
    shutil.copy(small_corpus / "tokenizer.json", short / "tokenizer.json")
    with pytest.raises(SolulabError, match="too short"):
        make_simulator(str(short)).simulate(forms("a"), held_out_text(small_corpus))
    assert make_simulator("rule").name == "rule"


def test_autointerp_cli_with_an_lm_simulator(collected_runs, lm_run, tmp_path):
    run = tmp_path / "gelu"
    shutil.copytree(collected_runs / "gelu", run)
    out = CliRunner().invoke(cli_app, ["autointerp", str(run), "--tokens", "256",
                                       "--simulator", str(lm_run), "--simulate-tokens", "24"])
    assert out.exit_code == 0, out.output
    assert "median simulation" in out.output
    saved = json.loads((run / "neurons" / "autointerp.json").read_text())
    assert saved["meta"]["simulator"] == str(lm_run)
    scores = [n["simulation"] for n in saved["neurons"].values() if n["simulation"] is not None]
    assert len(scores) > 32 and all(-1 <= s <= 1 for s in scores)
