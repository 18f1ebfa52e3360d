#!/usr/bin/env bash
# tests/gpu/device.sh — what one call on the GPU machine runs: test-gpu, then a
# decode/prefill benchmark on a synthetic model of Qwen3-30B-A3B's shape (Q4_K_M mix).
# Logs go to $OUT (test-gpu.log, bench.log, logs.tgz). BENCH_LAYERS=N shortens the model.
cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L
if [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then
    d=$(dirname "$(find / -name 'libcublas.so.13' -not -path '*/proc/*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
    echo "# libcublas from $d"
fi
if [ -z "${SKIP_TESTS:-}" ]; then
    LOG=/tmp/gpulogs tests/gpu/run.sh 2>&1 | tee "$OUT/test-gpu.log"
fi
if [ -z "${SKIP_BENCH:-}" ]; then
    build/gpu/gen_model -o /tmp/b30.gguf --preset 30b-a3b ${BENCH_LAYERS:+--layers $BENCH_LAYERS} --mix q4_k_m --n-vocab 151936 --threads 16 2>&1 | tail -1
    build/gpu/qwen3moe -m /tmp/b30.gguf --bench -p 512 -n 128 -r 3 2>&1 | tee "$OUT/bench.log"
    build/gpu/qwen3moe -m /tmp/b30.gguf --raw -p "Once upon a time" -n 32 --temp 0 2>&1 | tail -3 | tee -a "$OUT/bench.log"
fi
tar czf "$OUT/logs.tgz" -C /tmp gpulogs 2>/dev/null
true
