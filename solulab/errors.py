"""What solulab's commands report to a user: one line for an error (exit status 2), where a run
stopped for an interruption (the shell's exit status for the signal)."""

from __future__ import annotations

import signal
from pathlib import Path


class SolulabError(ValueError):
    """Bad input or a state that cannot be used; the message says what to change."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a step, with a checkpoint written."""

    def __init__(self, signum: int, step: int, total_steps: int, checkpoint: Path):
        super().__init__(f"{signal.Signals(signum).name} at step {step} of {total_steps}")
        self.signum, self.step, self.total_steps, self.checkpoint = (signum, step, total_steps,
                                                                     checkpoint)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
