#!/usr/bin/env bash
# bench/variant.sh NAME "-DFLAG=... ..." — a build of the GPU runner with compile-time
# switches (the kernel's #ifndef knobs, e.g. -DPK_FPIPE=4), for bench/ab_variants.sh:
# build/ab/NAME/qwen3moe, made by the Makefile's gpu-bins rules (BUILD=build/ab/NAME, the
# switches in NVEXTRA), so it is linked as build/gpu/qwen3moe is and runs on the GPU machine.
# Prints the persistent kernel's registers and spills per instance (ptxas), which decide
# more of its speed than most changes (bench/NOTES.md). Needs nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/variant.sh NAME [\"-Dflags\"]" >&2; exit 2; }
D=build/ab/$1
mkdir -p "$D"
if ! make -s BUILD="$D" NVEXTRA="-Xptxas -v ${2:-}" "$D/gpu/qwen3moe" > "$D/ptxas.log" 2>&1; then
    cat "$D/ptxas.log" >&2; exit 1
fi
# per instance k_persist<family, attention mode> (<0, 1>: Q4_K + Q6_K, the Q4_K_M file at depth < 256)
awk '/Compiling entry function .*k_persist/ { match($0, /ILi[0-9]ELi[0-9]E/); f = substr($0, RSTART + 3, 1); m = substr($0, RSTART + 7, 1) }
     /spill stores/ && f != "" { sp = $0 }
     /Used [0-9]+ registers/ && f != "" { match($0, /Used [0-9]+ registers/); gsub(/^ +/, "", sp)
         printf "k_persist<%s, %s>: %s, %s\n", f, m, substr($0, RSTART + 5, RLENGTH - 5), sp; f = "" }' "$D/ptxas.log"
mv "$D/gpu/qwen3moe" "$D/qwen3moe"
rm -rf "$D/gpu" "$D/qwen3moe_cuda.o"   # keeps the tree small enough to carry to the GPU machine
echo "built $D/qwen3moe"
