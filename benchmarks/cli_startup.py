"""How long ``solulab --help`` and each command's ``--help`` take to start, beside a bare Python
start, measured as whole processes side by side (median of ``--repeat`` runs, in turn).

    python benchmarks/cli_startup.py [--repeat 7]

The installed ``solulab`` runs the same ``main()`` as ``python -m solulab.cli``; commands import
what they need (torch among it) only once they run, so ``--help`` never loads a model.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = [[], ["train"], ["neurons", "collect"], ["study", "report"], ["serve"],
            ["replicate"], ["demo"]]


def seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    runs = {"python -c pass": [sys.executable, "-c", "pass"],
            **{"solulab " + " ".join(c + ["--help"]): [sys.executable, "-m", "solulab.cli", *c,
                                                        "--help"] for c in COMMANDS}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, argv in runs.items():
            times[name].append(seconds(argv))
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<36} {'median s':>9} {'max s':>7} {'- python':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<36} {median:>9.3f} {max(values):>7.3f} {median - base:>9.3f}")


if __name__ == "__main__":
    main()
