#!/usr/bin/env bash
# bench/ab_variants.sh — builds side by side in one call on the GPU machine (the method of
# bench/NOTES.md's decode steps): for each of BUILDS (paths under build/, e.g. "gpu ab/x"
# from bench/variant.sh), --parity on an NL-layer Qwen3-30B-A3B-shaped model and the
# persistent kernel's phase profile (QWEN3MOE_PERSIST_PROF=1); then ROUNDS rounds of tg128
# (-p 64, REPS runs each) on the full file, the builds interleaved within a round so that
# the card's drift hits them alike.
#   BUILDS="gpu ab/x"  BENCH_BUILDS=(default BUILDS)  ROUNDS=3  REPS=3  NL=8  MIX=q4_k_m
#   NOPAR=1 (no parity)  PROFONLY=1 (no timing)  PROFLINES=45
cd "$(dirname "$0")/.." || exit 2
if [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then   # the runtime's cuBLAS, wherever the machine keeps it
    d=$(dirname "$(find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
fi
BUILDS=${BUILDS:-gpu} ROUNDS=${ROUNDS:-3} MIX=${MIX:-q4_k_m} NL=${NL:-8} DISK=${DISK:-/tmp}
G=build/gpu/gen_model
for b in $BUILDS; do [ -x "build/$b/qwen3moe" ] || { echo "error: build/$b/qwen3moe missing (bench/variant.sh, carried)" >&2; exit 1; }; done
MS=$DISK/abv$NL-$MIX.gguf M=$DISK/abv-$MIX.gguf
[ -f "$MS" ] || $G -q -o "$MS" --preset 30b-a3b --layers "$NL" --mix "$MIX" --n-vocab 151936 --threads "$(nproc)" || exit 1
for b in $BUILDS; do
    if [ -z "${NOPAR:-}" ]; then
        echo "== parity $b"
        "build/$b/qwen3moe" -m "$MS" --parity --raw -p "The quick brown fox jumps over the lazy dog" -n 16 > "$DISK/abv.log" 2>&1
        echo "rc=$? $(grep -E '^  (mean cosine|min cosine|expert sets|result)' "$DISK/abv.log" | tr -s ' ' | tr '\n' ';')"
    fi
    echo "== profile $b"
    QWEN3MOE_PERSIST_PROF=1 "build/$b/qwen3moe" -m "$MS" --gpu --raw -p "Once upon a time" -n 24 --temp 0 2>&1 >/dev/null |
        grep -A40 "persistent kernel, last step" | head -"${PROFLINES:-45}"
done
[ -n "${PROFONLY:-}" ] && exit 0
[ -f "$M" ] || $G -q -o "$M" --preset 30b-a3b --mix "$MIX" --n-vocab 151936 --threads "$(nproc)" || exit 1
for r in $(seq "$ROUNDS"); do
    for b in ${BENCH_BUILDS:-$BUILDS}; do
        "build/$b/qwen3moe" -m "$M" --bench -p 64 -n 128 -r "${REPS:-3}" --json 2>/dev/null |
            python3 -c "import json,sys;d=json.load(sys.stdin);g=d['decode'];print(f\"r$r $b: tg128 {g['tok_s']:.1f} ({g['min']:.1f}..{g['max']:.1f}) {d['card']}\")" ||
            echo "r$r $b: bench failed"
    done
done
