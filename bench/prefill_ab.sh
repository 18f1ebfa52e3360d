#!/usr/bin/env bash
# bench/prefill_ab.sh — on the GPU machine: prefill time split by part
# (QWEN3MOE_PREFILL_PROF) with the generic and the flat dequantizer, per mix.
#   MIXES="q4_k_m q4_0"   REPS=2
cd "$(dirname "$0")/.." || exit 2
if [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then
    d=$(dirname "$(find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
fi
DISK=${DISK:-/tmp/qwen3moe-bench}; mkdir -p "$DISK"
for mix in ${MIXES:-q4_k_m q4_0}; do
    m=$DISK/ab-$mix.gguf
    build/gpu/gen_model -q -o $m --preset 30b-a3b --mix $mix --n-vocab 151936 --threads $(nproc) || continue
    for dq in generic flat; do
        echo "## $mix dequant=$dq"
        QWEN3MOE_DEQUANT=$dq QWEN3MOE_PREFILL_PROF=1 build/gpu/qwen3moe -m $m --bench -p 512 -n 16 -r ${REPS:-2} -c 4096 2>&1 |
            grep -E "^prefill|pp512" | tail -2
    done
    rm -f $m
done
