"""Automated interpretability: each rule kind on hand-made tokens, and planted neurons in a model
built by hand recovered by the explainer and separated from noise by the whole-range scores."""

import html
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from scipy.stats import binomtest, fisher_exact
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from typer.testing import CliRunner

from solulab import ModelConfig, Transformer
from solulab.autointerp import rules
from solulab.autointerp.agreement import compare_runs
from solulab.autointerp.explain import HeldOut, explain
from solulab.autointerp.run import (
    RESULTS_FILE,
    autointerp,
    ensure_explanations,
    load_explanations,
    rank_by_pattern,
)
from solulab.cli import app as cli_app
from solulab.data import Corpus
from solulab.errors import SolulabError
from solulab.neurons.collect import collect
from solulab.neurons.settings import StoreSettings
from solulab.pipelines.sweep_report import best_explained
from solulab.study.create import create_study
from solulab.study.db import connect
from solulab.web.app import viewer_app


def bits(rule, toks):
    return [int(v) for v in rule.predict(toks)]


CODE = ["def", " f", "(", "x", "):", "\n", "    ", "return", " x", " #", " done", "\n", "if",
        " a", " ==", " '", "b", "':", "\n"]


def test_a_tokens_forms_are_one_rule_and_unrelated_tokens_are_not():
    toks = ["Run", " runs", " running", " ran", " RUN", "run"]
    assert rules.family("Running") == rules.family(" run") == "run" != rules.family("ran")
    assert bits(rules.forms("run"), toks) == [1, 1, 1, 0, 1, 1]
    assert rules.forms("run", ["Run", " runs"]).description == "forms of 'run' ('Run', 'runs')"
    assert rules.forms("run", [" run"]).description == "the token 'run'"
    assert bits(rules.one_of(["ran", "run"]), toks) == [1, 1, 1, 1, 1, 1]
    assert rules.one_of(["ran", "run"]).kind == "unrelated"
    assert rules.show("\n") == "'⏎'" and rules.show("  ") == "'␣'"


def test_words_and_their_pieces():
    toks = [" scri", "pt", " x", "_y", " XML", "_", "CT", "YPE", " Foo", "Bar", " S", "ubject"]
    text = rules.TokenText(toks)
    assert list(text.word) == ["script", "script", "x_y", "x_y", "xml_ctype", "xml_ctype",
                               "xml_ctype", "xml_ctype", "foobar", "foobar", "subject", "subject"]
    assert bits(rules.word("script"), toks) == [1, 1] + [0] * 10
    assert bits(library("pieces of ALL_CAPS names"), toks) == [0] * 4 + [1] * 4 + [0] * 4
    assert bits(library("pieces of snake_case names"), toks) == [0, 0, 1, 1] + [0] * 8
    assert bits(library("pieces of CamelCase names"), toks) == [0] * 8 + [1, 1, 0, 0]
    assert bits(library("a single letter starting a longer word"), toks) == [
        0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    assert bits(library("the stem of a word split before its ending"), toks) == [
        1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0]
    assert bits(rules.suffix("ype"), toks) == [0] * 4 + [1] * 4 + [0] * 4


def test_neighbours_ngrams_and_the_line():
    assert bits(rules.after(rules.forms("def")), CODE) == [0, 1] + [0] * 17
    assert bits(rules.before(rules.forms("(")), CODE) == [0, 1] + [0] * 17
    bigram = rules.both(rules.forms("x"), rules.after(rules.forms("return")))
    assert bits(bigram, CODE) == [0] * 8 + [1] + [0] * 10
    assert bits(rules.after_on_line("if"), CODE) == [0] * 13 + [1] * 5 + [0]
    assert bits(rules.after(library("newlines")), CODE) == [0] * 6 + [1, 0, 0, 0, 0, 0, 1] + [0] * 6
    # Rules never look across the sequences a text was cut into.
    text = rules.TokenText(["def", " f", "def", " g"], starts=[0, 2])
    assert list(rules.after(rules.forms("f")).evaluate(text)) == [0, 0, 0, 0]
    assert list(rules.after(rules.forms("def")).evaluate(text)) == [0, 1, 0, 1]


@pytest.mark.parametrize("name, expected", [
    ("the first token of a line", [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ("the last token of a line", [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0]),
    ("tokens inside brackets", [0, 0, 0, 1, 1] + [0] * 14),
    ("tokens inside a comment", [0] * 10 + [1, 1] + [0] * 7),
    ("tokens inside a string", [0] * 16 + [1, 1, 0]),
    ("tokens after a statement keyword (if, elif, while, for, assert, return) on the same line",
     [0] * 8 + [1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0]),
])
def test_positions_in_code(name, expected):
    assert bits(library(name), CODE) == expected


def test_punctuation_marks_fused_with_markup():
    toks = [",", " `,", '"``,', " ,)", " a,", ".", "``"]
    assert bits(rules.punctuation_mark(","), toks) == [1, 1, 1, 1, 0, 0, 0]


def library(name):
    return next(r for r in rules.LIBRARY if r.description == name)


@pytest.mark.parametrize("name, toks, expected", [
    ("all-caps words", ["NASA", " is", " OK", "A", "Ab"], [1, 0, 1, 0, 0]),
    ("digits", ["12", " 3", "x1", ","], [1, 1, 0, 0]),
    ("a number followed by a comma", ["1", ",000", " 2", " and"], [1, 0, 0, 0]),
    ("base64-like runs", [" aGVs", "bG8g", "d29y", "bGQ=", " the"], [1, 1, 1, 1, 0]),
    ("hex-like runs", [" 0x", "dead", "beef", "42", " cafe"], [0, 0, 0, 1, 0]),
    ("pieces of numbers (decimal or hex)", [" 0x", "E7", " 12", " x", "_1"], [1, 1, 1, 0, 0]),
    ("whitespace and indentation", ["    ", "x", "\n", "\t"], [1, 0, 1, 1]),
    ("newlines", ["a", "\n", ":\n"], [0, 1, 1]),
    ("punctuation", ["(", "):", "x", " ,"], [1, 1, 0, 1]),
    ("Python keywords", [" def", "define", "return", " lambda"], [1, 0, 1, 1]),
    ("capitalised words", [" Paris", "paris", " PARIS", "London"], [1, 0, 0, 1]),
    ("non-Latin script", ["Москва", "東京", "Paris", "123"], [1, 1, 0, 0]),
    ("articles and determiners", [" The", " cat", " its", " a", "an"], [1, 0, 1, 1, 1]),
    ("modal verbs", [" can", " Could", " canal"], [1, 1, 0]),
    ("forms of 'be'", [" is", " was", " island"], [1, 1, 0]),
    ("prepositions", [" of", " in", " off"], [1, 1, 0]),
])
def test_library_rules(name, toks, expected):
    assert bits(library(name), toks) == expected


@pytest.mark.parametrize("name, toks, expected", [
    ("the first piece of a word split into pieces",
     [" ent", "ities", " x", " S", "ubject", "_", "id"], [1, 0, 0, 1, 0, 0, 0]),
    ("a later part of a compound name (after '_' or a case change)",
     [" get", "_", "extra", "_info", " Py", "Arg", "_Parse", " x"], [0, 0, 1, 1, 0, 1, 1, 0]),
    ("a later part of a compound name (after '_' or a case change)",
     ["__", "init", "__", " _", "private"], [0, 0, 0, 0, 0]),
    ("numbers with their signs and separators",
     [" -", "1", " x", "12", ":", "30", " :", " a", " -"], [1, 1, 0, 1, 1, 1, 0, 0, 0]),
    ("numbers with their signs and separators", [" 2020", ",", " we", " 5", "."], [1, 0, 0, 1, 0]),
    ("a single lowercase letter", ["p", " v", "pv", "P", "_"], [1, 1, 0, 0, 0]),
    ("auxiliary verbs", [" has", " can", " is", " hash", " Did"], [1, 1, 1, 0, 1]),
    ("the token that opens a string", CODE, [0] * 15 + [1, 0, 0, 0]),
    ("the token that opens a string", ["It", "'s", " John", "'s", " '", "quoted", "'"],
     [0, 0, 0, 0, 1, 0, 0]),  # an apostrophe is not a quote
    ("tokens inside a string", ["It", "'s", " John", "'s", " '", "quoted", "'"],
     [0, 0, 0, 0, 0, 1, 1]),
    ("the token that opens a string", ["x", " =", " '"], [0, 0, 1]),
    ("separators between items in brackets",
     ["f", "(", "a", ",", " b", "),", " (", "c", ",\n", "\n    ", "d", ")", ","],
     [0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0]),  # the comma of '),' here is outside
    ("separators between items in brackets", ["f", "(", "g", "(", "a", "),", " b", ")"],
     [0, 0, 0, 0, 0, 1, 0, 0]),
    ("separators between items in brackets", ["f", "(", "\n    ", "a", ")"], [0] * 5),
    ("tokens inside a short string (a key, name or option)",
     ["d", "['", "nt", "_user", "']", " '", "a", " long", " message", " for", " the", " user",
      "'"], [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]),  # the message has 29 characters
    ("tokens inside a short string (a key, name or option)", [" x", " =", " '", "cp", "125"],
     [0, 0, 0, 1, 1]),  # still open where the text ends: judged by what was seen
    ("the target of an assignment (before its '=')",
     ["self", ".x", " =", " f", "(", "a", "=", "1", ")", "\n", "    ", "k", " +=", " 1", "\n",
      "g", "(", "b", "=", "2", ")"], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0] + [0] * 6),
    ("the word that starts a line", ["col", "or", "map", " =", " x", "\n", "  ", "y", " z"],
     [1, 1, 1, 0, 0, 0, 0, 1, 0]),
    ("arithmetic, comparison and bitwise operators", [" +", " <=", " =", "//", " ->", "x"],
     [1, 1, 0, 1, 0, 0]),
    ("pieces of all-caps words", [" LAT", "IN", " SMALL", " A", " Ab", "C"], [1, 1, 1, 0, 0, 0]),
    ("Python built-in names", [" int", "(", " str", " print", " Int", " mystr"],
     [1, 0, 1, 1, 0, 0]),
])
def test_library_rules_for_pieces_numbers_and_positions(name, toks, expected):
    assert bits(library(name), toks) == expected


def test_the_token_after_or_before_a_punctuation_mark():
    toks = ["x", "='", "a", " =", " b", "("]
    assert bits(rules.after(rules.punctuation_mark("=")), toks) == [0, 0, 1, 0, 1, 0]
    assert bits(rules.before(rules.punctuation_mark("=")), toks) == [1, 0, 1, 0, 0, 0]


def test_user_regex_and_a_bad_one():
    assert rules.regex(r"^\d+$").predict(["12", "a1"]) == [True, False]
    with pytest.raises(ValueError, match="bad regular expression"):
        rules.regex("(")


def planted_examples(tokens, fires):
    """Top examples as the store gives them: windows of 20 before and 4 after each firing."""
    return [(tokens[max(0, i - 20):i + 5], min(i, 20)) for i in np.flatnonzero(fires)[:20]]


@pytest.mark.parametrize("plant, expected, ok", [
    ("after_def", "the token after 'def'", True),
    ("family", "forms of 'print' ('print', 'printed', 'printing', 'prints')", True),
    ("unrelated", "one of the tokens", False),
])
def test_planted_rules_are_recovered_and_a_disjunction_is_refused(plant, expected, ok):
    rng = np.random.default_rng(1)
    names = [" alpha", " beta", " gamma", " delta", " omega", " zeta"]
    words = [" the", " value", " of", " print", " printed", " prints", " printing", " def",
             " self", " f", " s", " 6", ":", "\n"] + names
    tokens = list(rng.choice(words, 6000))
    fires = {
        "after_def": np.array([i > 0 and tokens[i - 1] == " def" for i in range(6000)]),
        "family": np.array([rules.family(t) == "print" for t in tokens]),
        "unrelated": np.array([t in (" f", " s", " self", " 6") for t in tokens]),
    }[plant]
    acts = fires * 5.0 + rng.normal(0, 0.1, 6000)
    train, held = slice(0, 3000), slice(3000, 6000)
    e = explain(planted_examples(tokens[train], fires[train]), HeldOut(tokens[held], 100),
                acts[held], fire_at=2.5)
    assert e.interpretable is ok and e.description.startswith(expected), e
    if ok:
        assert e.coverage == 1.0 and e.auroc > 0.98  # not 1: rules stop at sequence cuts
    else:
        assert e.rejected_reason == "unrelated tokens are not one rule"
        assert "NOT INTERPRETABLE" in e.why()


def test_a_context_raters_rarely_pass_alone_is_refused_as_too_generic():
    """Firing on every token inside a comment: the rule covers every top example and is rare
    enough on held-out text, yet raters passed such neurons about one time in four, so it is
    not an explanation (the rejection says why)."""
    rng = np.random.default_rng(2)
    words = [" x", " =", " 1", " f", "(", ")", " y", " the", " value", " # ", "\n"]
    tokens = list(rng.choice(words, 6000, p=[.1, .1, .1, .1, .1, .1, .1, .05, .05, .03, .17]))
    fires = rules.TokenText(tokens, range(0, 6000, 100)).in_comment
    acts = fires * 5.0 + rng.normal(0, 0.1, 6000)
    train, held = slice(0, 3000), slice(3000, 6000)
    e = explain(planted_examples(tokens[train], fires[train]), HeldOut(tokens[held], 100),
                acts[held], fire_at=2.5)
    assert e.description == "tokens inside a comment" and e.coverage == 1.0
    assert not e.interpretable and e.rejected_reason.startswith("too generic to be one thing")


@pytest.mark.parametrize("firing, hits, ok", [
    ("digits", 16, False), ("digits", 17, True), ("named", 16, True)])
def test_a_rule_naming_no_token_needs_17_of_20_top_examples(firing, hits, ok):
    """A class ("digits") must hold on 17 of the 20 top examples, a named token on 16: under the
    study page's breadth rule raters passed such classes at 16 of 20 little more than half the
    time, and named tokens at any coverage."""
    rng = np.random.default_rng(3)
    filler = [" the", " value", " of", " x", " =", "(", ")", ":", "\n", " self", " f", " s"]
    numbers = [" 3", " 17", " 42", " 5", " 88", " 9", " 250", " 61", " 7", " 12"]
    tops = ([" print"] * hits if firing == "named" else list(rng.choice(numbers, hits)))
    tops += [" alpha", " beta", " gamma", " delta"][:20 - hits]
    examples = [(list(rng.choice(filler, 10)) + [top] + list(rng.choice(filler, 4)), 10)
                for top in tops]
    held = list(rng.choice(filler * 8 + numbers + [" print"], 3000))  # 10% numbers
    e = explain(examples, HeldOut(held, 100), np.zeros(3000), fire_at=1.0)
    wanted = "digits" if firing == "digits" else "the token 'print'"
    assert e.description.startswith(wanted) and e.coverage == hits / 20, e
    assert e.interpretable is ok
    if not ok:
        assert e.rejected_reason == ("covers 80% of the top examples, under 85% for a rule "
                                     "that names no token")


def test_whole_range_scores_equal_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    tokens = [rng.choice(["a", "b", "c", "1"]) for _ in range(400)]
    acts = np.array([3.0 if t == "a" else 0.0 for t in tokens]) + rng.normal(0, 0.5, 400)
    examples = [(tokens[i - 2:i + 1], 2) for i in np.argsort(-acts)[:20] if i >= 2]
    e = explain(examples, HeldOut(tokens, 50), acts, fire_at=1.5)
    assert e.description == "the token 'a'" and e.interpretable
    assert e.rejected_reason and e.rejected != e.description
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
    collect(run, n_tokens=4096, settings=StoreSettings(k=20), progress=False)
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

    page = TestClient(viewer_app(run.parent), base_url="http://127.0.0.1").get(
        "/neuron", params={"run": "run", "layer": 0, "neuron": 0}).text
    assert f"<b>{html.escape(token.description)}</b> (auto-INTERPRETABLE" in page
    assert f"Best rejected: {html.escape(token.rejected)}" in page
    shown = CliRunner().invoke(cli_app, ["neurons", "show", str(run), "--layer", "0",
                                         "--neuron", "0"]).output
    assert f"automated explanation: {token.why()}" in shown


def test_explanations_of_other_verdict_code_are_made_again(planted):
    """A replication's automated rows are the current verdict's: explanations stored by other
    rules (or of another model) are redone; current ones are reused as they are."""
    run, _ = planted
    autointerp(run, n_tokens=4096, progress=False)
    path = run / "neurons" / RESULTS_FILE
    stored = json.loads(path.read_text())
    stored["neurons"]["0:0"]["description"] = "kept"
    path.write_text(json.dumps(stored))
    assert ensure_explanations(run, progress=False)[(0, 0)]["description"] == "kept"
    for key, stale in (("verdict", "0" * 16), ("model_sha256", "f" * 64)):
        stored["meta"][key] = stale
        path.write_text(json.dumps(stored))
        redone = ensure_explanations(run, progress=False)
        assert redone[(0, 0)]["description"] != "kept" and len(redone) == 8
        stored = json.loads(path.read_text())
        stored["neurons"]["0:0"]["description"] = "kept"


def test_regex_ranks_the_planted_neuron_first(planted):
    run, word = planted
    ranked = rank_by_pattern(run, rf"^\s*{word}$", n_tokens=4096, top=3)
    assert (ranked[0]["layer"], ranked[0]["neuron"]) == (0, 0)
    assert ranked[0]["auroc"] > 0.99
    # Ranked by F1: a broad pattern's high-recall, near-chance-precision neurons come last.
    ranked = rank_by_pattern(run, r"\S", n_tokens=4096, top=8)
    f1 = [r["f1"] for r in ranked]
    assert f1 == sorted(f1, reverse=True)
    for r in ranked:
        p, q = r["precision"], r["recall"]
        assert r["f1"] == pytest.approx(2 * p * q / (p + q))


def test_compare_gives_the_study_statistics_and_agreement_with_humans(planted, tmp_path):
    run, _ = planted
    autointerp(run, n_tokens=4096, progress=False)
    other = tmp_path / "other"
    shutil.copytree(run, other)
    (tmp_path / "unexplained").mkdir()
    shutil.copytree(run, tmp_path / "unexplained" / "run")
    (tmp_path / "unexplained" / "run" / "neurons" / "autointerp.json").unlink()
    with pytest.raises(SolulabError, match="solulab autointerp"):
        compare_runs([tmp_path / "unexplained" / "run"])
    saved = json.loads((other / "neurons" / "autointerp.json").read_text())
    for n in range(2, 6):  # four more neurons interpretable in the second run
        saved["neurons"][f"0:{n}"]["interpretable"] = True
    (other / "neurons" / "autointerp.json").write_text(json.dumps(saved))
    auto = {run.resolve(): {k: v["interpretable"] for k, v in load_explanations(run / "neurons")
                            .items()},
            other.resolve(): {k: v["interpretable"] for k, v in load_explanations(
                other / "neurons").items()}}
    assert sum(auto[run.resolve()].values()) == 2 and sum(auto[other.resolve()].values()) == 6

    db = tmp_path / "study.sqlite"
    create_study({"a": run, "b": other}, db, neurons_per_model=8, annotators=["x", "y"])
    conn = connect(db)
    items = conn.execute("SELECT item_id, run, layer, neuron FROM secrets ORDER BY item_id")
    humans, autos, by_annotator = [], [], {"x": ([], []), "y": ([], [])}
    for i, row in enumerate(items.fetchall()):
        truth = auto[Path(row["run"]).resolve()][(row["layer"], row["neuron"])]
        for annotator, label in (("x", truth if i % 5 else not truth), ("y", i % 3 == 0)):
            conn.execute("INSERT INTO ratings (annotator, item_id, label) VALUES (?, ?, ?)",
                         (annotator, row["item_id"],
                          "interpretable" if label else "not_interpretable"))
            humans.append(label)
            autos.append(truth)
            by_annotator[annotator][0].append(label)
            by_annotator[annotator][1].append(truth)
    conn.execute("UPDATE annotators SET finished_at = datetime('now')")
    conn.close()

    result = compare_runs([run, other], db)
    a, b = result["models"][str(run)], result["models"][str(other)]
    assert (a["interpretable"], a["neurons"], b["interpretable"], b["neurons"]) == (2, 8, 6, 8)
    assert (a["wilson_low"], a["wilson_high"]) == pytest.approx(
        binomtest(2, 8).proportion_ci(method="wilson"))
    odds, p = fisher_exact([[2, 6], [6, 2]])
    assert result["fisher"][0]["p_value"] == pytest.approx(p)
    assert result["fisher"][0]["odds_ratio"] == pytest.approx(odds)
    human = result["human"]
    assert human["all"]["ratings"] == 32
    assert human["all"]["kappa"] == pytest.approx(cohen_kappa_score(humans, autos))
    for annotator, (h, t) in by_annotator.items():
        assert human["per_annotator"][annotator]["kappa"] == pytest.approx(
            cohen_kappa_score(h, t))
    assert human["per_annotator"]["x"]["agreement"] == pytest.approx(
        np.mean(np.array(by_annotator["x"][0]) == np.array(by_annotator["x"][1])))

    out = CliRunner().invoke(cli_app, ["autointerp", "compare", str(run), str(other),
                                       "--study", str(db)])
    assert out.exit_code == 0, out.output
    assert "Fisher" in out.output and f"kappa {human['all']['kappa']:.3f}" in out.output
    out = CliRunner().invoke(cli_app, ["autointerp", "compare", str(run), str(run)])
    assert out.exit_code != 0 and "given twice" in out.output


def test_the_report_lists_the_best_explained_neurons(planted):
    run, word = planted
    autointerp(run, n_tokens=4096, progress=False)
    explanations = load_explanations(run / "neurons")
    rows = best_explained("1x32/solu_ln", explanations, n=5)
    interpretable = sorted((e["auroc"] for e in explanations.values() if e["interpretable"]),
                           reverse=True)
    assert [float(r[4]) for r in rows] == pytest.approx(interpretable[:5], abs=5e-4)
    assert rows[0][1] == "0:0" and rows[0][2] == f"the token {word!r}"
