#!/usr/bin/env bash
# Rebuilds the four held-out models' neuron stores from the committed weights, exactly as rated:
#     bash benchmarks/data/heldout-labels/rebuild.sh OUT_DIR
# Needs `solulab` on PATH, the Python 3.11 standard library (the built-in corpus) and Debian's
# python3-doc (`apt-get install python3-doc`) for the English corpus. A few minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?give an output directory}
docs=/usr/share/doc/python3.11/html/_sources
[ -d "$docs" ] || { echo "needs python3-doc: apt-get install python3-doc" >&2; exit 2; }
mkdir -p "$out"
[ -d "$out/code-corpus" ] || solulab corpus build --out "$out/code-corpus" --val-fraction 0.1 \
    --tokenizer "$here/models/code/gelu/tokenizer.json"
[ -d "$out/prose-corpus" ] || solulab corpus build --out "$out/prose-corpus" --source "$docs" \
    --val-fraction 0.1 --tokenizer "$here/models/prose/gelu/tokenizer.json"
for corpus in code prose; do
    for act in gelu solu_ln; do
        run="$out/$corpus/$act"
        [ -d "$run/neurons" ] && continue
        rm -rf "$run" && mkdir -p "$out/$corpus" && cp -r "$here/models/$corpus/$act" "$run"
        solulab neurons collect "$run" --corpus "$(cd "$out/$corpus-corpus" && pwd)" \
            --tokens 262144
    done
done
echo "runs in $out: python benchmarks/autointerp_agreement.py $here/code-study.sqlite --runs $out/code"
echo "             python benchmarks/autointerp_agreement.py $here/prose-study.sqlite --runs $out/prose"
