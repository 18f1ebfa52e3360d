#!/usr/bin/env bash
# bench/prefill_ab.sh — on the GPU machine: prefill time split by part
# (QWEN3MOE_PREFILL_PROF) under each setting of VARS, per mix.
#   MIXES="q4_k_m q4_0"   REPS=2
#   VARS="QWEN3MOE_DEQUANT=generic QWEN3MOE_DEQUANT=flat"   (one environment setting per run)
cd "$(dirname "$0")/.." || exit 2
if [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then
    d=$(dirname "$(find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
fi
DISK=${DISK:-/tmp/qwen3moe-bench}; mkdir -p "$DISK"
for mix in ${MIXES:-q4_k_m q4_0}; do
    m=$DISK/ab-$mix.gguf
    build/gpu/gen_model -q -o $m --preset 30b-a3b --mix $mix --n-vocab 151936 --threads $(nproc) || continue
    for v in ${VARS:-QWEN3MOE_DEQUANT=generic QWEN3MOE_DEQUANT=flat}; do
        echo "## $mix $v"
        env "$v" QWEN3MOE_PREFILL_PROF=1 build/gpu/qwen3moe -m $m --bench -p 512 -n 16 -r ${REPS:-2} -c 4096 2>&1 |
            grep -E "^prefill|pp512" | tail -2
    done
    rm -f $m
done
