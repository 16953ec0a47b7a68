"""Scores that need no human: rules, the explainer and whole-range checks."""

HELD_OUT_TOKENS = 16_384  # default held-out tokens for the whole-range check and ``regex``
