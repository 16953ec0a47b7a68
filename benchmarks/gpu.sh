#!/usr/bin/env bash
# The GPU checks, in one command, into one markdown file to paste into BENCHMARKS.md:
#
#     bash benchmarks/gpu.sh [RESULTS.md]      # default gpu_results.md; PYTHON=... to choose
#
# Needs PyTorch and Triton, not an installed solulab (the repository goes on PYTHONPATH). Each
# section runs on its own, under a time limit; a failed one is recorded with the end of its
# output and the next one runs. About 3.5 minutes on an H100; no section starts after 6.
# Without a CUDA device it measures nothing (GPU_CHECKS_ALLOW_CPU=1: every section at tiny
# sizes on the CPU, to try this script).
set -u
results=${1:-gpu_results.md}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
checks="$root/benchmarks/gpu_checks.py"
budget=360  # seconds after which no section starts; each is also cut at its own limit
log=$(mktemp) err=$(mktemp)
trap 'rm -f "$log" "$err"' EXIT

if rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null); then
    git -C "$root" diff --quiet HEAD 2>/dev/null || rev="$rev, modified"
else
    rev="not a git checkout"
fi
echo -e "## GPU checks (\`benchmarks/gpu.sh\`), $(date -u +%Y-%m-%d)\n" >"$results"
echo "Host $(uname -n), $(uname -m); commit $rev." >>"$results"

cpu=""
if [ "${GPU_CHECKS_ALLOW_CPU:-}" = 1 ]; then
    cpu="--allow-cpu"
    echo -e "\n**CPU dry run (GPU_CHECKS_ALLOW_CPU=1): tiny sizes, nothing here is a GPU figure.**" >>"$results"
elif ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' >"$log" 2>&1; then
    echo -e "\nno CUDA device: nothing measured" >>"$results"
    [ -s "$log" ] && { echo; echo '```'; tail -n 5 "$log"; echo '```'; } >>"$results"
    cat "$results"
    exit 0
fi

# section TITLE LIMIT_S FORMAT(md|text) COMMAND...: run it; append its output (text in a code
# block) and, if it failed, the end of its error output
section() {
    local title=$1 limit=$2 format=$3 left=$((budget - SECONDS)) rc start=$SECONDS cmd
    shift 3
    cmd="$*"
    echo "== $title" >&2
    echo -e "\n### $title\n" >>"$results"
    if [ "$left" -lt 10 ]; then
        echo "**skipped**: the script's ${budget} s were spent" >>"$results"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>"$err"
    rc=$?
    if [ "$format" = md ]; then
        cat "$log" >>"$results"
    elif [ -s "$log" ]; then
        { echo '```'; cat "$log"; echo '```'; } >>"$results"
    fi
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ]; then what="timed out after ${limit} s"; else what="exit status $rc"; fi
        { echo; echo "**FAILED** ($what); the end of its error output:"; echo
          echo '```'; tail -n 30 "$err"; echo '```'; } >>"$results"
    fi
    echo -e "\n(${title%%.*}: $((SECONDS - start)) s, \`${cmd//"$root/"/}\`)" >>"$results"
}

if [ -n "$cpu" ]; then  # tiny sizes for the benchmark scripts
    overhead="--device cpu --n-layers 1 --d-model 64 --n-ctx 32 --batch 2 --vocab 256 --rounds 1 --reps 1"
    collect="--device cpu --n-layers 1 --d-model 64 --n-ctx 32 --batch 2 --batches 2 --rounds 1"
else
    overhead="--device cuda --dtype bfloat16 --n-layers 12 --d-model 768 --n-ctx 1024 --batch 8 --vocab 50304 --rounds 5"
    collect="--device cuda --n-layers 4 --d-model 512 --n-ctx 512 --batch 32 --batches 8 --rounds 3"
fi

section "1. Device" 60 md "$py" "$checks" device $cpu
section "2. Triton kernels against the float64 reference" 150 md "$py" "$checks" kernels $cpu
# shellcheck disable=SC2086  # word splitting of the flag lists is meant
section "3. SoLU-LN / GELU training step, MFU (activation_overhead.py)" 180 text \
    "$py" "$checks" script "$root/benchmarks/activation_overhead.py" $overhead
section "4. Triton SoLU-LN bandwidth against a device copy" 60 md "$py" "$checks" bandwidth $cpu
section "5. Fused unembedding loss against float64 and the unfused loss" 60 md "$py" "$checks" loss $cpu
# shellcheck disable=SC2086
section "6. Neuron collection against a bare forward (collect_throughput.py)" 90 text \
    "$py" "$checks" script "$root/benchmarks/collect_throughput.py" $collect
# shellcheck disable=SC2086
section "7. The same, a stream per point instead of the points stacked (--stacked no)" 90 text \
    "$py" "$checks" script "$root/benchmarks/collect_throughput.py" $collect --stacked no

echo -e "\nTotal $SECONDS s." >>"$results"
cat "$results"
