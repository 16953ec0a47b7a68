"""Sweeps and their comparison: every size x activation trained with identical settings
(``runs``), the baseline's scaling law (``scaling``), and losses, size-equivalent multipliers and
plots (``compare``)."""

from solulab.sweep.runs import (
    SWEEP_FILE,
    SweepError,
    SweepPlan,
    load_sweep,
    run_sweep,
    train_or_resume,
)

__all__ = ["SWEEP_FILE", "SweepError", "SweepPlan", "load_sweep", "run_sweep",
           "train_or_resume"]
