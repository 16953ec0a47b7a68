"""Run a short training in a child process and SIGKILL it at a chosen moment.

usage: python _train_child.py CORPUS OUT STEPS MODE KILL_STEP [--resume]
MODE: after-checkpoint, during-checkpoint (SIGKILL), signal-during-checkpoint (SIGTERM while the
checkpoint of KILL_STEP is written; prints where training stopped) or none.
"""

import os
import signal
import sys

from solulab import ModelConfig
from solulab.errors import TrainingInterrupted
from solulab.training.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
from test_train import small_model_cfg, small_train_cfg  # noqa: E402


def main() -> None:
    corpus, out, steps, mode, kill_step = sys.argv[1:6]
    steps, kill_step = int(steps), int(kill_step)
    callbacks = []
    if mode == "after-checkpoint":
        def kill_after(step, record):
            if step == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)
        callbacks.append(kill_after)
    elif mode in ("during-checkpoint", "signal-during-checkpoint"):
        import solulab.io

        real_replace = os.replace
        sent = signal.SIGKILL if mode == "during-checkpoint" else signal.SIGTERM

        def replace_with_signal(src, dst):
            if str(dst).endswith(f"step_{kill_step:08d}.pt"):
                os.kill(os.getpid(), sent)  # the temporary file is fully written
            real_replace(src, dst)

        solulab.io.os.replace = replace_with_signal
    cfg = ModelConfig(**small_model_cfg())
    try:
        Trainer(cfg, small_train_cfg(steps), corpus, out, resume="--resume" in sys.argv,
                progress=False, callbacks=callbacks).run()
    except TrainingInterrupted as stop:
        print(f"stopped at step {stop.step}")


if __name__ == "__main__":
    main()
