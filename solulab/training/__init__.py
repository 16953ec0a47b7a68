"""Training: the trainer and its one training step (``trainer``), its settings (``config``) and
checkpoints to resume from (``checkpoints``)."""
