"""Scores that need no human: rules, the explainer and whole-range checks."""

HELD_OUT_TOKENS = 16_384  # default held-out tokens for the whole-range check and ``regex``
FIRE_FRACTION = 0.5  # a neuron fires where it exceeds this fraction of its maximum
