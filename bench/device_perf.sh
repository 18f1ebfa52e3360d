#!/usr/bin/env bash
# bench/device_perf.sh — on the GPU machine: kernel microbenchmarks, then end-to-end
# --bench on a synthetic Qwen3-30B-A3B-shaped Q4_K_M model, staged vs direct matvecs,
# and per-kernel times of a few decode steps under ncu. Logs to $OUT.
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
build/gpu/bench_kernels 2>&1 | tee "$OUT/kernels.txt"
build/gpu/gen_model -q -o /tmp/b30.gguf --preset 30b-a3b ${BENCH_LAYERS:+--layers $BENCH_LAYERS} --mix q4_k_m --n-vocab 151936 --threads 16
for mode in staged direct; do
    echo "## $mode"
    QWEN3MOE_MMV=$([ $mode = direct ] && echo direct || echo) build/gpu/qwen3moe -m /tmp/b30.gguf --bench -p 512 -n 128 -r 3 2>&1 | grep -E "^\||decode reads" | tee -a "$OUT/bench.txt"
done
build/gpu/gen_model -q -o /tmp/b2.gguf --preset 30b-a3b --layers 2 --mix q4_k_m --n-vocab 151936 --threads 16
ncu --metrics gpu__time_duration.sum --csv build/gpu/qwen3moe -m /tmp/b2.gguf --raw --prompt-ids 1,2 -n 3 --temp 0 > "$OUT/ncu.csv" 2>"$OUT/ncu.err"
python3 bench/ncu_summary.py "$OUT/ncu.csv" | tee "$OUT/ncu_summary.txt"
