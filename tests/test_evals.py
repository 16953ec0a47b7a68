import json
import shutil

import pytest
import torch

from solulab import ModelConfig, Transformer
from solulab.data import Corpus
from solulab.data.tokenizer import load_tokenizer
from solulab.errors import SolulabError
from solulab.evals import tasks
from solulab.evals.runner import evaluate_run
from solulab.evals.scoring import ContinuationScore, score_token_continuations


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = Transformer(ModelConfig(n_layers=1, d_model=32, n_heads=2, n_ctx=16, d_vocab=300))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m


def direct_score(model, context, continuation):
    seq = (context + continuation)[-model.cfg.n_ctx:]
    logprobs = torch.log_softmax(model(torch.tensor([seq])).double(), dim=-1)[0]
    start = len(seq) - len(continuation)
    total, greedy = 0.0, True
    for pos in range(start, len(seq)):
        total += logprobs[pos - 1, seq[pos]].item()
        greedy &= logprobs[pos - 1].argmax().item() == seq[pos]
    return total, greedy


def test_scores_equal_a_direct_computation_including_truncation(model):
    pairs = [([5, 6, 7], [8]), ([1] * 3, [2, 3, 4]), (list(range(10, 40)), [41, 42]),
             ([9], [9, 9, 9, 9, 9])]
    scores = score_token_continuations(model, pairs, batch_size=3)
    for (context, continuation), score in zip(pairs, scores):
        logprob, greedy = direct_score(model, context, continuation)
        assert score.logprob == pytest.approx(logprob, abs=1e-4)
        assert score.is_greedy == greedy and score.n_tokens == len(continuation)


def test_greedy_continuation_is_recognised(model):
    context = [3, 4, 5]
    best = model(torch.tensor([context]))[0, -1].argmax().item()
    assert score_token_continuations(model, [(context, [best])])[0].is_greedy


def test_arithmetic_items_are_right_and_have_three_distinct_distractors():
    for prompt, answer, distractors in tasks.arithmetic_items(90, seed=3):
        a, op, b, eq = prompt.split()
        assert eq == "=" and int(answer) == tasks.OPERATIONS[op](int(a), int(b))
        assert len(set(distractors)) == 3 and answer not in distractors
    ops = [p.split()[1] for p, _, _ in tasks.arithmetic_items(90)]
    assert ops.count("+") == ops.count("-") == ops.count("*") == 30


def test_arithmetic_accuracy_counts_the_right_option_winning(model, monkeypatch, small_corpus):
    tokenizer = Corpus(small_corpus).tokenizer
    calls = []

    def fake(model, pairs):
        calls.append(len(pairs))
        # item i: the right answer (option 0) wins for even i, a distractor for odd i
        return [ContinuationScore(-1.0 if (j % 4 == 0) == ((j // 4) % 2 == 0) else -2.0,
                                  False, 1) for j in range(len(pairs))]

    monkeypatch.setattr(tasks, "score_token_continuations", fake)
    result = tasks.run_arithmetic(model, tokenizer, n=40)
    assert calls == [160]
    assert result.accuracy == 0.5 and result.n == 40
    assert result.stderr == pytest.approx((0.25 / 40) ** 0.5)


def test_cloze_items_end_in_a_word_and_rebuild_the_passage(small_corpus):
    corpus = Corpus(small_corpus)
    items = tasks.cloze_items(corpus, 20, n_tokens=40)
    assert len(items) == 20
    val = corpus.tokens("val")[:].tolist()
    val_text = corpus.decode([t for t in val if t != corpus.eot_id])
    for context, word in items:
        assert word[0].isspace() and word[1:].isidentifier() and len(word) >= 4
        assert context + word in val_text


def _run_dir(tmp_path, small_corpus):
    corpus = Corpus(small_corpus)
    run = tmp_path / "run"
    Transformer(ModelConfig(n_layers=1, d_model=32, n_heads=2, n_ctx=64,
                            d_vocab=corpus.vocab_size)).save_pretrained(run)
    shutil.copyfile(small_corpus / "tokenizer.json", run / "tokenizer.json")
    return run


def test_evaluate_run_writes_results_and_checks_its_input(tmp_path, small_corpus):
    run = _run_dir(tmp_path, small_corpus)
    results = evaluate_run(run, ["arithmetic", "cloze"], small_corpus, n=12)
    saved = json.loads((run / "evals.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["arithmetic"]["n"] == 12 and 0 <= saved["cloze"]["accuracy"] <= 1
    own, corpus = (load_tokenizer(path / "tokenizer.json") for path in (run, small_corpus))
    text = "def f(x): return 12 + x"  # the run's own tokenizer file is the corpus's
    assert own.encode(text).ids == corpus.encode(text).ids
    assert own.decode(own.encode(text).ids) == text
    with pytest.raises(SolulabError, match="unknown tasks \\['mmlu'\\]"):
        evaluate_run(run, ["mmlu"])
    (run / "tokenizer.json").write_text((run / "tokenizer.json").read_text().replace(
        '"<|endoftext|>"', '"<|eot|>"'))
    with pytest.raises(SolulabError, match="another tokenizer"):
        evaluate_run(run, ["cloze"], small_corpus, n=4)
