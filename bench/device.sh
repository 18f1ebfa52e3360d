#!/usr/bin/env bash
# bench/device.sh — the speed benchmark in one call on the GPU machine: build (when
# nvcc is there; otherwise the binaries of `make gpu-bins` carried with the tree),
# write Qwen3-30B-A3B-shaped synthetic models onto the device's local disk, run
# --bench on each mix, print a short table last.
#   MIXES="q4_k_m q8_0 q4_0"   the type mixes (llama.cpp's choices per tensor)
#   DEPTH2=8192                 the second context depth, for the first mix only
#   REPS=5                      runs per measurement (median and min..max reported)
#   LAYERS=N                    a shorter model (smoke test)
#   EXTRA_F32=1                 also bench the first mix with exact f32 activations
#   REBUILD=1                   rebuild even when build/gpu binaries were carried
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
DISK=${DISK:-/tmp/qwen3moe-bench}; mkdir -p "$DISK"
MIXES=${MIXES:-q4_k_m q8_0 q4_0}
DEPTH2=${DEPTH2:-8192}
REPS=${REPS:-5}
B=build/gpu
# build unless carried binaries are given (REBUILD=1 forces it)
if [ -n "${REBUILD:-}" ] || [ ! -x $B/qwen3moe ] || [ ! -x $B/gen_model ]; then
    if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then make -s gpu-bins >&2 || exit 1; fi
fi
for f in $B/qwen3moe $B/gen_model; do [ -x $f ] || { echo "error: $f missing: run make gpu-bins (needs nvcc) and carry build/" >&2; exit 1; }; done
if [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then   # the runtime's cuBLAS, wherever the machine keeps it
    d=$(dirname "$(find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ROWS=$OUT/rows.txt; : > $ROWS
bench() {   # label model depth [env...]
    local label=$1 m=$2 d=$3; shift 3
    local ctx=$((d + 1024)) j=$OUT/$label.json
    [ $ctx -lt 4096 ] && ctx=4096
    env "$@" $B/qwen3moe -m $m --bench -p 512 -n 128 -d $d -r $REPS -c $ctx --json > $j 2> $OUT/$label.log
    local rc=$?
    if [ $rc -ne 0 ]; then echo "$label: exit $rc" >> $ROWS; tail -n 3 "$OUT/$label.log" >&2; return; fi
    python3 - "$label" "$j" >> $ROWS <<'PY'
import json, sys
d = json.load(open(sys.argv[2])); p, g = d["prefill"], d["decode"]
bw = d["copy_bandwidth_gb_s"]
print(f'| {sys.argv[1]:<22} | {d["depth"]:>5} | {p["tok_s"]:>9.1f} ({p["min"]:.0f}..{p["max"]:.0f}) | {g["tok_s"]:>7.1f} ({g["min"]:.1f}..{g["max"]:.1f}) '
      f'| {g["gb_s"]:>6.0f} | {100*g["gb_s"]/bw if bw else 0:>4.1f}% | {d["vram_used_bytes"]/2**30:>5.1f} | {d["card"]} | {d.get("decode_path", "")} |')
PY
}
first=1
for mix in $MIXES; do
    m=$DISK/30b-a3b-$mix.gguf
    t0=$(date +%s.%N)
    $B/gen_model -q -o $m --preset 30b-a3b ${LAYERS:+--layers $LAYERS} --mix $mix --n-vocab 151936 --threads $(nproc) || { echo "$mix: gen_model failed" >> $ROWS; continue; }
    echo "# wrote $m ($(du -h $m | cut -f1)) in $(python3 -c "import time;print(f'{time.time()-$t0:.1f}')") s" | tee -a $OUT/gen.txt
    bench "$mix" $m 0
    if [ -n "$first" ]; then
        [ "${DEPTH2:-0}" -gt 0 ] && bench "$mix" $m $DEPTH2
        [ -n "${EXTRA_F32:-}" ] && bench "$mix-f32act" $m 0 QWEN3MOE_MMV=f32
    fi
    first=
    rm -f $m
done
cat $OUT/gen.txt
echo "| model (30B-A3B shape)  | depth | pp512 tok/s (min..max) | tg128 tok/s (min..max) | GB/s | of copy BW | VRAM GiB | card | decode |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
cat $ROWS
