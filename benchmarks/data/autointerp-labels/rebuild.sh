#!/usr/bin/env bash
# Rebuilds the four labelled runs' neuron stores from the committed weights, exactly as rated:
#     bash benchmarks/data/autointerp-labels/rebuild.sh OUT_DIR
# Needs `solulab` on PATH, the Python 3.11 standard library (the built-in corpus) and Debian's
# python3-doc (`apt-get install python3-doc`) for the English corpus. About a minute on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?give an output directory}
docs=/usr/share/doc/python3.11/html/_sources
[ -d "$docs" ] || { echo "needs python3-doc: apt-get install python3-doc" >&2; exit 2; }
mkdir -p "$out"
[ -d "$out/code-corpus" ] || solulab corpus build --out "$out/code-corpus" \
    --tokenizer "$here/models/code-gelu/tokenizer.json"
[ -d "$out/prose-corpus" ] || solulab corpus build --out "$out/prose-corpus" --source "$docs" --keep-markup \
    --tokenizer "$here/models/prose-gelu/tokenizer.json"
for model in code-gelu code-solu_ln prose-gelu prose-solu_ln; do
    [ -d "$out/$model/neurons" ] && continue
    rm -rf "$out/$model" && cp -r "$here/models/$model" "$out/$model"
    solulab neurons collect "$out/$model" --corpus "$(cd "$out/${model%%-*}-corpus" && pwd)" \
        --tokens 130000
done
echo "runs in $out: python benchmarks/autointerp_agreement.py --labels $here/labels.csv --set test --runs $out"
