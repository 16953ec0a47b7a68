#!/usr/bin/env bash
# Rebuilds the neuron stores of the six rated models; they are the models of ../depth-labels,
# whose committed weights this reuses (no weights of its own):
#     bash benchmarks/data/depth2-labels/rebuild.sh OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/../depth-labels/rebuild.sh" "${1:?give an output directory}" >/dev/null
echo "then: python benchmarks/autointerp_agreement.py $here/study.sqlite --runs $1 --per-layer"
