#!/usr/bin/env bash
# Rebuilds the neuron stores of a labelled set's rated models from its committed weights:
#     bash benchmarks/data/depth-labels/rebuild.sh OUT_DIR [MODELS_DIR SIZE]
# MODELS_DIR holds {sweep,seed1,seed2}/SIZE/{gelu,solu_ln} (default: this set's, 2x96).
# Needs `solulab` on PATH and the Python 3.11 standard library (the built-in corpus). About two
# minutes on 2 cores for 2x96. The runs land where `autointerp_agreement.py --runs OUT_DIR` finds
# them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?give an output directory}
models=$(cd "${2:-$here/models}" && pwd)
size=${3:-2x96}
mkdir -p "$out"
[ -d "$out/code-corpus" ] || solulab corpus build --out "$out/code-corpus" --val-fraction 0.1 \
    --tokenizer "$models/sweep/$size/gelu/tokenizer.json"
for seed in sweep seed1 seed2; do
    for act in gelu solu_ln; do
        run="$out/$seed/$size/$act"
        [ -d "$run/neurons" ] && continue
        rm -rf "$run" && mkdir -p "$out/$seed/$size" && cp -r "$models/$seed/$size/$act" "$run"
        solulab neurons collect "$run" --corpus "$(cd "$out/code-corpus" && pwd)" --tokens 262144
        solulab autointerp "$run"
    done
done
echo "then: python benchmarks/autointerp_agreement.py $(dirname "$models")/study.sqlite --runs $out --by activation --per-layer"
