import json

import pytest

from solulab.errors import SolulabError
from solulab.evals.summary import collect_evals, plot_evals, side_by_side
from solulab.pipelines.sweep_report import write_report
from solulab.sweep.compare import compare_sweep, format_table, plot_comparison

E, A, ALPHA = 1.7, 400.0, 0.3
SIZES = {"s1": 1e5, "s2": 4e5, "s3": 1.6e6, "s4": 6.4e6, "s5": 2.56e7}


def law(n):
    return E + A * n ** -ALPHA


def make_sweep(root, solu_factor=2.0, sizes=SIZES):
    """A sweep directory whose baseline follows the law and whose solu_ln runs reach the
    baseline's loss at ``solu_factor`` times their size."""
    runs = []
    for size, n in sizes.items():
        for act, factor in (("gelu", 1.0), ("solu_ln", solu_factor)):
            run = root / size / act
            run.mkdir(parents=True)
            final = law(n * factor)
            curve = [(1000, final + 0.4), (2000, final + 0.1), (4000, final)]
            (run / "metrics.jsonl").write_text("".join(
                json.dumps({"step": i, "tokens": t, "loss": v, "val_loss": v}) + "\n"
                for i, (t, v) in enumerate(curve)))
            (run / "run.json").write_text(json.dumps(
                {"complete": True, "n_params": int(n), "val_loss": final}))
            runs.append(f"{size}/{act}")
    (root / "sweep.json").write_text(json.dumps(
        {"sizes": list(sizes), "acts": ["gelu", "solu_ln"], "model": {}, "train": {},
         "corpus_tokenizer_sha256": "x", "runs": runs}))
    return root


def test_multiplier_of_a_run_at_the_baselines_2n_loss_is_2(tmp_path):
    result = compare_sweep(make_sweep(tmp_path), n_bootstrap=50)
    fit = result["fit"]
    assert fit["E"] == pytest.approx(E, rel=1e-3) and fit["alpha"] == pytest.approx(ALPHA, rel=1e-2)
    for run in result["runs"]:
        expected = 2.0 if run["act"] == "solu_ln" else 1.0
        assert run["multiplier"] == pytest.approx(expected, rel=1e-2)
        assert run["multiplier_low"] <= run["multiplier"] <= run["multiplier_high"]
        if run["act"] == "solu_ln":
            assert run["loss_vs_baseline"] == pytest.approx(
                law(SIZES[run["size"]] * 2) - law(SIZES[run["size"]]))
    for points in result["curves"].values():  # refitted at every shared evaluation point
        assert [t for t, _ in points] == [1000, 2000, 4000]
        assert all(m == pytest.approx(2.0, rel=0.05) for _, m in points)
    assert json.loads((tmp_path / "compare.json").read_text())["baseline"] == "gelu"
    table = format_table(result)
    assert "2.000x" in table and "s5" in table


def test_three_sizes_give_multipliers_without_intervals(tmp_path):
    sizes = {k: SIZES[k] for k in ("s1", "s2", "s3")}
    result = compare_sweep(make_sweep(tmp_path, sizes=sizes), n_bootstrap=50)
    assert all(r["multiplier"] == pytest.approx(2.0 if r["act"] == "solu_ln" else 1.0, rel=1e-2)
               and r["multiplier_low"] is None and r["multiplier_high"] is None
               for r in result["runs"])
    assert "nan" not in format_table(result).lower()
    assert "NaN" not in (tmp_path / "compare.json").read_text()


def test_too_few_sizes_compares_losses_without_a_multiplier(tmp_path):
    result = compare_sweep(make_sweep(tmp_path, sizes={"s1": 1e5, "s2": 4e5}))
    assert result["fit"] is None and "no scaling-law fit" in result["note"]
    assert all(r["multiplier"] is None for r in result["runs"])
    assert {r["act"]: r["loss_vs_baseline"] for r in result["runs"] if r["size"] == "s1"}[
        "gelu"] == 0.0


def test_missing_baseline_is_refused(tmp_path):
    make_sweep(tmp_path)
    with pytest.raises(SolulabError, match="no finished 'relu' runs"):
        compare_sweep(tmp_path, baseline="relu")


def test_plots_and_report(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    result = compare_sweep(root, n_bootstrap=20)
    paths = plot_comparison(result, tmp_path / "plots")
    assert [p.name for p in paths] == ["learning_curves.png", "multiplier.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    (root / "s1" / "gelu" / "evals.json").write_text(json.dumps({"arithmetic": {
        "task": "arithmetic", "accuracy": 0.31, "stderr": 0.02, "n": 300, "chance": 0.25,
        "details": {}}}))
    page = write_report(root).read_text()
    assert page.count("data:image/png;base64,") == 3  # learning curves, multiplier, evals
    assert "size-equivalent multiplier" in page and "0.310 ± 0.020" in page
    assert "<script" not in page


def test_evals_side_by_side_with_the_difference_from_the_baseline(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    result = compare_sweep(root, n_bootstrap=0)
    for size, act, acc in (("s1", "gelu", 0.30), ("s1", "solu_ln", 0.34), ("s2", "gelu", 0.40)):
        (root / size / act / "evals.json").write_text(json.dumps({"cloze": {
            "task": "cloze", "accuracy": acc, "stderr": 0.01, "n": 100, "chance": 0.0,
            "details": {}}}))
    points = collect_evals(root, result["runs"])
    header, rows = side_by_side(points, "gelu")
    assert header == ["task", "size", "gelu", "solu_ln", "solu_ln - gelu"]
    assert rows == [["cloze", "s1", "0.300 ± 0.010", "0.340 ± 0.010", "+0.040"],
                    ["cloze", "s2", "0.400 ± 0.010", "", ""]]
    assert plot_evals(points, "gelu", tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_each_task_and_size_is_one_row_when_the_activations_differ_in_parameters():
    from solulab.evals.summary import EvalPoint

    points = [EvalPoint("1l", "gelu", 1000, "cloze", 0.3, 0.01, 100, 0.0),
              EvalPoint("1l", "solu_ln", 1064, "cloze", 0.4, 0.01, 100, 0.0),
              EvalPoint("2l", "gelu", 2000, "cloze", 0.5, 0.01, 100, 0.0),
              EvalPoint("2l", "solu_ln", 2128, "cloze", 0.5, 0.01, 100, 0.0)]
    _, rows = side_by_side(points, "gelu")
    assert [row[:2] for row in rows] == [["cloze", "1l"], ["cloze", "2l"]]
    assert rows[0][-1] == "+0.100"
