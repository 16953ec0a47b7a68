"""Wall time of ``solulab autointerp`` over every neuron of a run, by stage.

Times, on a copy of the run (its store is left untouched): the held-out forward pass, explaining
every neuron with the rule as simulator, and, with ``--simulator DIR``, the same with a local
language model predicting activations. Prints neurons per second for each.

    python benchmarks/autointerp_runtime.py RUN [--tokens 16384] [--simulator DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from solulab.autointerp import HELD_OUT_TOKENS
from solulab.autointerp.run import autointerp, held_out_activations
from solulab.autointerp.simulate import make_simulator
from solulab.neurons.collect import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--tokens", type=int, default=HELD_OUT_TOKENS)
    parser.add_argument("--simulator", default=None)
    parser.add_argument("--simulate-tokens", type=int, default=256)
    args = parser.parse_args()
    store = open_store(args.run)
    neurons = len(store.layers) * store.d_mlp
    print(f"run {args.run}: {len(store.layers)} layers x {store.d_mlp} neurons, "
          f"{args.tokens:,} held-out tokens")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(args.run, run)
        start = time.perf_counter()
        held_out_activations(run, store.layers, args.tokens)
        print(f"held-out forward pass       {time.perf_counter() - start:7.1f} s")
        for name in ["rule"] + ([args.simulator] if args.simulator else []):
            simulator = make_simulator(name, args.simulate_tokens)
            start = time.perf_counter()
            autointerp(run, n_tokens=args.tokens, simulator=simulator, progress=False)
            seconds = time.perf_counter() - start
            print(f"autointerp, simulator {'rule' if name == 'rule' else 'LM':<5} "
                  f"{seconds:7.1f} s  {neurons / seconds:7.1f} neurons/s")


if __name__ == "__main__":
    main()
