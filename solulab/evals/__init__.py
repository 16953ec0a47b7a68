"""Downstream evaluations: offline tasks and the lm-evaluation-harness adapter."""
