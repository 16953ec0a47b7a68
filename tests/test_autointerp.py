"""Automated interpretability: each rule kind on hand-made tokens, and planted neurons in a model
built by hand recovered by the explainer and separated from noise by the whole-range scores."""

import html
import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

from solulab import ModelConfig, Transformer
from solulab.autointerp import rules
from solulab.autointerp.explain import HeldOut, explain
from solulab.autointerp.run import autointerp, load_explanations, rank_by_pattern
from solulab.data import Corpus
from solulab.neurons.collect import collect
from solulab.web.app import create_app


def test_token_and_context_rules():
    toks = ["def", " f", "(", "x", "):", " return", " x", " def"]
    assert rules.token_set(["def"]).predict(toks) == [1, 0, 0, 0, 0, 0, 0, 1]
    assert rules.token_set([" x", "f"]).predict(toks) == [0, 1, 0, 1, 0, 0, 1, 0]
    rule = rules.token_in_context("x", "return", within=1)
    assert rule.predict(toks) == [0, 0, 0, 0, 0, 0, 1, 0]
    assert rules.token_in_context("x", "def", within=3).predict(toks) == [0, 0, 0, 1, 0, 0, 0, 0]
    assert rules.token_in_context("x", "def", within=2).predict(toks) == [0] * 8


def library(name):
    return next(r for r in rules.LIBRARY if r.description == name)


@pytest.mark.parametrize("name, toks, expected", [
    ("all-caps words", ["NASA", " is", " OK", "A", "Ab"], [1, 0, 1, 0, 0]),
    ("digits", ["12", " 3", "x1", ","], [1, 1, 0, 0]),
    ("a number followed by a comma", ["1", ",000", " 2", " and"], [1, 0, 0, 0]),
    ("base64-like runs", [" aGVs", "bG8g", "d29y", "bGQ=", " the"], [1, 1, 1, 1, 0]),
    ("hex-like runs", [" 0x", "dead", "beef", "42", " cafe"], [0, 0, 0, 1, 0]),
    ("whitespace and indentation", ["    ", "x", "\n", "\t"], [1, 0, 1, 1]),
    ("newlines", ["a", "\n", ":\n"], [0, 1, 1]),
    ("punctuation", ["(", "):", "x", " ,"], [1, 1, 0, 1]),
    ("Python keywords", [" def", "define", "return", " lambda"], [1, 0, 1, 1]),
    ("capitalised words", [" Paris", "paris", " PARIS", "London"], [1, 0, 0, 1]),
    ("non-Latin script", ["Москва", "東京", "Paris", "123"], [1, 1, 0, 0]),
])
def test_library_rules(name, toks, expected):
    assert library(name).predict(toks) == [bool(e) for e in expected]


def test_user_regex_and_a_bad_one():
    assert rules.regex(r"^\d+$").predict(["12", "a1"]) == [True, False]
    with pytest.raises(ValueError, match="bad regular expression"):
        rules.regex("(")


def test_whole_range_scores_equal_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    tokens = [rng.choice(["a", "b", "c", "1"]) for _ in range(400)]
    acts = np.array([3.0 if t == "a" else 0.0 for t in tokens]) + rng.normal(0, 0.5, 400)
    examples = [(tokens[i - 2:i + 1], 2) for i in np.argsort(-acts)[:20] if i >= 2]
    e = explain(examples, HeldOut(tokens, 50), acts, fire_at=1.5)
    assert e.description == "the token 'a'" and e.interpretable
    predicted = np.array([t == "a" for t in tokens])
    fires = acts > 1.5
    assert e.auroc == pytest.approx(roc_auc_score(fires, predicted))
    assert e.precision == pytest.approx((predicted & fires).sum() / predicted.sum())
    assert e.recall == pytest.approx((predicted & fires).sum() / fires.sum())
    assert e.simulation == pytest.approx(np.corrcoef(acts, predicted)[0, 1])
    assert e.frequency == pytest.approx(predicted.mean())


@pytest.fixture(scope="module")
def planted(small_corpus, tmp_path_factory):
    """A model whose neuron 0 fires exactly on one token, neuron 1 on digit tokens, and
    neurons 2-7 on positions (noise as far as tokens go)."""
    corpus = Corpus(small_corpus)
    vocab = 300
    strings = [corpus.decode([i]) for i in range(vocab)]
    counts = Counter(int(t) for t in np.asarray(corpus.tokens("val")))
    word = max((i for i in counts if strings[i].strip().isalpha() and len(strings[i].strip()) > 2),
               key=lambda i: counts[i])
    digits = [i for i in range(vocab) if strings[i].strip().isdigit()]
    d_pos = 20
    cfg = ModelConfig(n_layers=1, d_model=vocab + d_pos, n_heads=4, d_mlp=8, n_ctx=32,
                      d_vocab=vocab, act_fn="gelu", positional="learned")
    model = Transformer(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.embed.weight.zero_()
        model.embed.weight[:, :vocab] = 10 * torch.eye(vocab)
        model.pos_embed.weight.zero_()
        model.pos_embed.weight[:, vocab:] = 3 * torch.randn(cfg.n_ctx, d_pos, generator=gen)
        model.blocks[0].attn.out.weight.zero_()
        model.blocks[0].attn.out.bias.zero_()
        fc_in = model.blocks[0].mlp.fc_in
        fc_in.weight.zero_()
        fc_in.bias.fill_(-1.0)
        fc_in.weight[0, word] = 1.0
        fc_in.weight[1, digits] = 1.0
        fc_in.weight[2:, vocab:] = torch.randn(6, d_pos, generator=gen)
    run = tmp_path_factory.mktemp("planted") / "run"
    model.save_pretrained(run)
    shutil.copy(small_corpus / "tokenizer.json", run / "tokenizer.json")
    (run / "run.json").write_text(json.dumps({"corpus": str(small_corpus)}))
    collect(run, n_tokens=4096, k=20, progress=False)
    return run, strings[word].strip()


def test_explainer_recovers_planted_rules_and_rejects_noise(planted):
    run, word = planted
    results = autointerp(run, n_tokens=4096, progress=False)
    token, digit = results["0:0"], results["0:1"]
    assert token.description == f"the token {word!r}" and token.interpretable
    assert digit.description in ("digits", "a number followed by a comma")
    assert digit.interpretable
    noise = [results[f"0:{n}"] for n in range(2, 8)]
    assert not any(e.interpretable for e in noise)
    assert token.auroc > 0.99 and token.recall == 1.0
    assert max(e.auroc for e in noise if e.auroc == e.auroc) < token.auroc
    saved = load_explanations(run / "neurons")
    assert saved[(0, 0)]["description"] == token.description and len(saved) == 8

    page = TestClient(create_app(run.parent)).get(
        "/neuron", params={"run": "run", "layer": 0, "neuron": 0}).text
    assert f"<b>{html.escape(token.description)}</b> (auto-INTERPRETABLE" in page


def test_regex_ranks_the_planted_neuron_first(planted):
    run, word = planted
    ranked = rank_by_pattern(run, rf"^\s*{word}$", n_tokens=4096, top=3)
    assert (ranked[0]["layer"], ranked[0]["neuron"]) == (0, 0)
    assert ranked[0]["auroc"] > 0.99
