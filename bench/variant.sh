#!/usr/bin/env bash
# bench/variant.sh NAME "-DFLAG=... ..." — a build of the GPU runner with compile-time
# switches (the kernel's #ifndef knobs, e.g. -DPK_FPIPE=4), for bench/ab_variants.sh:
# build/ab/NAME/qwen3moe, linked like `make gpu-bins`' (static PCRE2 / utf8proc, so it runs
# on the GPU machine). Prints the persistent kernel's registers and spills (ptxas), which
# decide more of its speed than most changes (bench/NOTES.md). Needs nvcc; SRC=file builds
# another copy of qwen3moe_cuda.cu.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/variant.sh NAME [\"-Dflags\"]" >&2; exit 2; }
N=$1 F=${2:-} SRC=${SRC:-qwen3moe_cuda.cu}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$NVCC")")}
D=build/ab/$N
mkdir -p "$D"
# shellcheck disable=SC2086
if ! "$NVCC" -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -Wall -lineinfo $F -I. -Xptxas -v \
        -c -o "$D/cuda.o" "$SRC" 2> "$D/ptxas.log"; then
    cat "$D/ptxas.log" >&2; exit 1
fi
# per instance k_persist<family, attention mode> (<0, 1>: Q4_K + Q6_K, the Q4_K_M file at depth < 256)
awk '/Compiling entry function .*k_persist/ { match($0, /ILi[0-9]ELi[0-9]E/); f = substr($0, RSTART + 3, 1); m = substr($0, RSTART + 7, 1) }
     /spill stores/ && f != "" { sp = $0 }
     /Used [0-9]+ registers/ && f != "" { match($0, /Used [0-9]+ registers/); gsub(/^ +/, "", sp)
         printf "k_persist<%s, %s>: %s, %s\n", f, m, substr($0, RSTART + 5, RLENGTH - 5), sp; f = "" }' "$D/ptxas.log"
cc -O3 -march=x86-64-v3 -g -std=gnu11 -Wno-unused-parameter -o "$D/qwen3moe" qwen3moe.c "$D/cuda.o" \
    -Wl,-Bstatic -lpcre2-8 -lutf8proc -Wl,-Bdynamic -lm -lpthread \
    -L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64" -lcublas -lcudart_static -ldl -lrt -lstdc++
rm -f "$D/cuda.o"   # keeps the tree small enough to carry to the GPU machine
echo "built $D/qwen3moe"
