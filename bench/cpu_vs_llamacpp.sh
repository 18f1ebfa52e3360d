#!/usr/bin/env bash
# CPU decode speed, ours vs llama.cpp (node-llama-cpp 3.21.1, prebuilt CPU binaries), on the
# same file and thread count. Not a test: timings depend on the machine and its load.
#   bench/cpu_vs_llamacpp.sh [LAYERS] [THREADS] [ROUNDS]
# The model: Qwen3-30B-A3B's exact shape and Q4_K_M mix, cut to LAYERS layers (default 6),
# real vocabulary (the Q6_K output head is a large share of a decode step).
set -euo pipefail
cd "$(dirname "$0")/.."
L=${1:-6}; T=${2:-$(nproc)}; R=${3:-3}
make -s qwen3moe build/gen_model >/dev/null
bash tests/gen_models.sh real-q8_0 >/dev/null   # also exports the real vocabulary
M=build/models/bench-30b-a3b-${L}L-q4_k_m.gguf
[ -f $M ] || build/gen_model -o $M --preset 30b-a3b --layers $L --mix q4_k_m --vocab real --vocab-file build/models/qwen3-vocab.txt -q
ours=(); theirs=()
for r in $(seq 1 $R); do   # interleaved, so that load on the machine hits both alike
    o=$(./qwen3moe -m $M --cpu -t $T --bench -p 0 -n 32 -r 1 --json 2>/dev/null | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["decode"]["tok_s"])')
    l=$(node bench/llama_decode.mjs $M $T 32 | awk '{print $NF}')
    ours+=($o); theirs+=($l)
    echo "round $r: qwen3moe $o tok/s, llama.cpp $l tok/s"
done
/usr/bin/python3 - "${ours[*]}" "${theirs[*]}" "$T" "$L" <<'PY'
import sys, statistics as st
o = [float(x) for x in sys.argv[1].split()]; l = [float(x) for x in sys.argv[2].split()]
print(f"| model | threads | qwen3moe --cpu decode tok/s (median) | llama.cpp CPU decode tok/s (median) | ratio |")
print(f"| 30B-A3B shape, {sys.argv[4]} layers, Q4_K_M mix | {sys.argv[3]} | {st.median(o):.2f} | {st.median(l):.2f} | {st.median(o)/st.median(l):.2f}x |")
PY
