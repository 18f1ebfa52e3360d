#!/usr/bin/env bash
# bench/ab.sh — A/B of builds and environment settings on one model, in one call:
# --bench under each of CONFIGS (space-separated; commas join several settings of one
# config; bin=NAME runs build/gpu/NAME instead of build/gpu/qwen3moe), at depth 0 and
# DEPTH2 (D2CONFIGS there, default the same).
# Default: programmatic dependent launch on and off (QWEN3MOE_PDL=1 / 0).
# Uses the carried build/gpu binaries. REPS, DEPTH2, MIX as in bench/device.sh.
cd "$(dirname "$0")/.." || exit 2
B=build/gpu M=${DISK:-/tmp}/pdl-ab.gguf REPS=${REPS:-3} DEPTH2=${DEPTH2:-8192} MIX=${MIX:-q4_k_m}
CONFIGS=${CONFIGS:-QWEN3MOE_PDL=1 QWEN3MOE_PDL=0}
D2CONFIGS=${D2CONFIGS:-$CONFIGS}
if [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then
    d=$(dirname "$(find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
fi
$B/gen_model -q -o $M --preset 30b-a3b --mix $MIX --n-vocab 151936 --threads $(nproc) || exit 1
for d in 0 $DEPTH2; do
    cfgs=$CONFIGS; [ "$d" != 0 ] && cfgs=$D2CONFIGS
    for p in $cfgs; do
        ctx=$((d + 1024)); [ $ctx -lt 4096 ] && ctx=4096
        bin=$B/qwen3moe envs=()
        for kv in $(echo "$p" | tr ',' ' '); do case $kv in bin=*) bin=$B/${kv#bin=} ;; *) envs+=("$kv") ;; esac; done
        env "${envs[@]}" $bin -m $M --bench -p 512 -n 128 -d $d -r $REPS -c $ctx --json 2>/tmp/pdl-ab.log |
            python3 -c "import json,sys;d=json.load(sys.stdin);p,g=d['prefill'],d['decode'];print(f\"$MIX depth {d['depth']} $p: pp512 {p['tok_s']:.1f}  tg128 {g['tok_s']:.1f} ({g['min']:.1f}..{g['max']:.1f})  {d['card']}\")" ||
            tail -3 /tmp/pdl-ab.log
    done
done
rm -f $M
