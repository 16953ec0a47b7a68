"""Run the test sweep in a child process, SIGKILLing it inside one of its runs.

usage: python _sweep_child.py CORPUS OUT [KILL_RUN KILL_STEP]
KILL_RUN is the 1-based index of the run (in sweep order) to kill at KILL_STEP.
"""

import os
import signal
import sys

import solulab.sweep.runs
from solulab.training.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
from test_sweep import run_test_sweep  # noqa: E402


def main() -> None:
    corpus, out = sys.argv[1:3]
    if len(sys.argv) > 3:
        kill_run, kill_step = int(sys.argv[3]), int(sys.argv[4])
        started = []

        class KillingTrainer(Trainer):
            def __init__(self, *args, **kwargs):
                started.append(1)
                if len(started) == kill_run:
                    kwargs["callbacks"] = [lambda step, record: step == kill_step
                                           and os.kill(os.getpid(), signal.SIGKILL)]
                super().__init__(*args, **kwargs)

        solulab.sweep.runs.Trainer = KillingTrainer
    run_test_sweep(corpus, out)


if __name__ == "__main__":
    main()
