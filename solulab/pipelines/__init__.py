"""Recipes over the other packages: the demo, the replication (plan, seeds, results page) and
the sweep's HTML report."""
