#!/usr/bin/env bash
# Rebuilds the neuron stores of the six rated four-layer models from the committed weights:
#     bash benchmarks/data/depth8-labels/rebuild.sh OUT_DIR
# Needs `solulab` on PATH and the Python 3.11 standard library (the built-in corpus). About four
# minutes on 2 cores. The runs land where `autointerp_agreement.py --runs OUT_DIR` finds them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?give an output directory}
mkdir -p "$out"
[ -d "$out/code-corpus" ] || solulab corpus build --out "$out/code-corpus" --val-fraction 0.1 \
    --tokenizer "$here/models/sweep/4x64/gelu/tokenizer.json"
for seed in sweep seed1 seed2; do
    for act in gelu solu_ln; do
        run="$out/$seed/4x64/$act"
        [ -d "$run/neurons" ] && continue
        rm -rf "$run" && mkdir -p "$out/$seed/4x64" && cp -r "$here/models/$seed/4x64/$act" "$run"
        solulab neurons collect "$run" --corpus "$(cd "$out/code-corpus" && pwd)" --tokens 262144
        solulab autointerp "$run"
    done
done
echo "then: python benchmarks/autointerp_agreement.py $here/study.sqlite --runs $out --min-layer 1 --by activation --per-layer"
