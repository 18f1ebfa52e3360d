#!/usr/bin/env bash
# bench/ncu_detail.sh — Nsight Compute's full section set (occupancy, warp stall reasons,
# memory workload) for a few decode kernels of a Qwen3-30B-A3B-shaped model cut to LAYERS
# layers; prints the report's details page. KERNELS is a regex over kernel names.
#   KERNELS='k_gateup2|k_mmv2|k_down2'  SKIP=20  COUNT=6  MIX=q4_k_m  LAYERS=4
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-/tmp/prof-out}; mkdir -p "$OUT"
DISK=${DISK:-/tmp/qwen3moe-prof}; mkdir -p "$DISK"
MIX=${MIX:-q4_k_m} LAYERS=${LAYERS:-4} KERNELS=${KERNELS:-k_gateup2|k_mmv2|k_down2} SKIP=${SKIP:-20} COUNT=${COUNT:-6}
B=build/gpu
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -x "$NCU" ] || { echo "error: ncu not found" >&2; exit 1; }
m=$DISK/prof-$MIX-$LAYERS.gguf
[ -f "$m" ] || $B/gen_model -q -o "$m" --preset 30b-a3b --layers "$LAYERS" --mix "$MIX" --n-vocab 151936 --threads "$(nproc)" || exit 1
"$NCU" --clock-control none --set full -k regex:"$KERNELS" --launch-skip "$SKIP" --launch-count "$COUNT" -f -o "$OUT/detail" \
    $B/qwen3moe -m "$m" --gpu --raw --prompt-ids 9707 -n 8 --temp 0 > "$OUT/ncu-detail.log" 2>&1 || { tail -5 "$OUT/ncu-detail.log"; exit 1; }
"$NCU" --import "$OUT/detail.ncu-rep" --page details > "$OUT/details.txt" 2>&1
rm -f "$OUT/detail.ncu-rep"
