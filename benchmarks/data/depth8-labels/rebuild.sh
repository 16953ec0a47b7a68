#!/usr/bin/env bash
# Rebuilds the neuron stores of the six rated four-layer models from the committed weights:
#     bash benchmarks/data/depth8-labels/rebuild.sh OUT_DIR
# About four minutes on 2 cores; the same steps as ../depth-labels/rebuild.sh, for these models.
# Then score with --min-layer 1 (README).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../depth-labels/rebuild.sh" "${1:?give an output directory}" "$here/models" 4x64
