"""Scores that need no human: rules, the explainer and whole-range checks."""
