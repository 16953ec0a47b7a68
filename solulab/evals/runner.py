"""Run offline tasks on a run directory and keep the results beside it (``evals.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from solulab.core.model import Transformer
from solulab.data import Corpus
from solulab.data.tokenizer import load_tokenizer
from solulab.errors import SolulabError
from solulab.evals.tasks import TASKS
from solulab.io import atomic_write_json, sha256_file
from solulab.runs import rundir
from solulab.runs.model_card import write_card
from solulab.runs.tracking import log_to_run


def evaluate_run(run_dir: Path, tasks: list[str], corpus_dir: Path | None = None,
                 n: int | None = None, seed: int = 0) -> dict[str, Any]:
    """``{task: TaskResult as dict}``, merged into ``RUN/evals.json``."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SolulabError(f"unknown tasks {unknown}; known: {', '.join(TASKS)}")
    run_dir = Path(run_dir)
    model = Transformer.from_pretrained(run_dir)
    tokenizer = load_tokenizer(run_dir / rundir.TOKENIZER)
    results = {}
    for task in tasks:
        kwargs: dict[str, Any] = {"seed": seed}
        if n is not None:
            kwargs["n"] = n
        if task == "cloze":
            corpus_dir = corpus_dir or rundir.trained_on(run_dir)
            if corpus_dir is None:
                raise SolulabError("cloze needs --corpus (the run records none)")
            corpus = Corpus(corpus_dir)
            if corpus.tokenizer_sha256 != sha256_file(run_dir / rundir.TOKENIZER):
                raise SolulabError(f"{corpus_dir} was tokenized with another tokenizer than "
                                   f"{run_dir}")
            kwargs["corpus"] = corpus
        results[task] = asdict(TASKS[task](model, tokenizer, **kwargs))
    path = run_dir / rundir.EVALS
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved.update(results)
    atomic_write_json(path, saved)
    log_to_run(run_dir, {f"eval/{task}_accuracy": r["accuracy"] for task, r in results.items()})
    write_card(run_dir)
    return results
