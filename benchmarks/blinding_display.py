"""What each study display leaks: the blinding audit's best cross-validated accuracy at telling
two models apart from their neurons' study items, per display, side by side on the same neurons.

    python benchmarks/blinding_display.py --model gelu=RUN --model solu_ln=RUN [--neurons 256]

Both runs need a neuron store. Items are built exactly as ``solulab study create`` builds them
(``item_payload`` and ``check_examples``) for ``--neurons`` neurons drawn from each model (all of
them by default), so the audit has more items than one study and so more power. Prints, per
display, the best classifier's accuracy with its interval and corrected p, and the
shading-only accuracy.
"""

from __future__ import annotations

import argparse
import functools
import random
import time

from solulab.neurons.store import NeuronStore
from solulab.study.audit import audit_pair, item_features
from solulab.study.create import check_examples, item_payload, shared_window
from solulab.study.display import DEFAULT_DISPLAY
from solulab.study.shading import plain, rank

VARIANTS = {"plain": plain, **{f"rank {share:.0%}": functools.partial(rank, share=share)
                               for share in (0.04, 0.06, 0.1, 0.2)}}


def features_for(stores: dict[str, NeuronStore], neurons: int, shade, seed: int):
    window = shared_window(stores)
    rng = random.Random(seed)
    features, labels = [], []
    for label, store in enumerate(stores.values()):
        pairs = [(layer, n) for layer in store.layers for n in range(store.d_mlp)]
        for layer, neuron in rng.sample(pairs, min(neurons, len(pairs))):
            item = item_payload(store, layer, neuron, window, shade)
            checks = [window.snippet(e) for e, _ in check_examples(store, layer, neuron, rng)]
            features.append(item_features(item, checks))
            labels.append(label)
    return features, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=RUN, twice")
    parser.add_argument("--neurons", type=int, default=10**9, help="neurons per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = dict(spec.split("=", 1) for spec in args.model)
    if len(runs) != 2:
        parser.error("give exactly two --model NAME=RUN")
    stores = {name: NeuronStore.open(f"{run}/neurons") for name, run in runs.items()}
    print(f"{' vs '.join(runs)}; the default display is {DEFAULT_DISPLAY!r}")
    print(f"{'display':<10} {'items':>5} {'best accuracy':>14} {'95% Wilson':>11} "
          f"{'p corrected':>11}  {'shading only':>12}  best classifier")
    for name, shade in VARIANTS.items():
        start = time.perf_counter()
        features, labels = features_for(stores, args.neurons, shade, args.seed)
        result = audit_pair(features, labels, args.seed)
        best = result["best"]
        shading = next(c for c in result["classifiers"]
                       if c["classifier"] == "logistic regression on shading")
        print(f"{name:<10} {len(labels):>5} {best['accuracy']:>14.1%} "
              f"{best['low']:>5.0%}-{best['high']:<5.0%} {best['p_corrected']:>11.2g}  "
              f"{shading['accuracy']:>12.1%}  {best['classifier']} "
              f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
