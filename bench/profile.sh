#!/usr/bin/env bash
# bench/profile.sh — where one decoded token's time goes, kernel by kernel, on the GPU
# machine: Nsight Compute times every decode kernel of a few greedy tokens on a
# Qwen3-30B-A3B-shaped model cut to LAYERS layers (the per-layer kernels have the full
# model's sizes), then prints per kernel: launches per layer, median time, DRAM bytes
# read and the rate. ncu runs each kernel alone (no overlap between kernels, clocks left
# as they are), so the sum is an upper bound on what the graph replay takes.
#   MIX=q4_k_m  LAYERS=4  TOKENS=6  NCU_EXTRA="..."  KEEP=1 (keep the model)
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-/tmp/prof-out}; mkdir -p "$OUT"
DISK=${DISK:-/tmp/qwen3moe-prof}; mkdir -p "$DISK"
MIX=${MIX:-q4_k_m} LAYERS=${LAYERS:-4} TOKENS=${TOKENS:-6}
B=build/gpu
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -x "$NCU" ] || { echo "error: ncu not found" >&2; exit 1; }
m=$DISK/prof-$MIX-$LAYERS.gguf
[ -f "$m" ] || $B/gen_model -q -o "$m" --preset 30b-a3b --layers "$LAYERS" --mix "$MIX" --n-vocab 151936 --threads "$(nproc)" || exit 1
"$NCU" --clock-control none --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum \
    -k regex:'^k_' $NCU_EXTRA \
    $B/qwen3moe -m "$m" --gpu --raw --prompt-ids 9707 -n "$TOKENS" --temp 0 > "$OUT/ncu.csv" 2> "$OUT/ncu.err" \
    || { echo "error: ncu failed" >&2; tail -5 "$OUT/ncu.err" >&2; exit 1; }
python3 - "$OUT/ncu.csv" "$LAYERS" "$TOKENS" <<'PY'
import csv, sys, statistics, re
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, rows = rows[0], rows[1:]
ki, mi, vi, ui = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value"), head.index("Metric Unit")
ii = head.index("ID")
L, T = int(sys.argv[2]), int(sys.argv[3])
by = {}
for r in rows:
    name = re.sub(r"\(.*", "", r[ki].replace("(int)", ""))
    v = float(r[vi].replace(",", ""))
    u = r[ui]
    if r[mi] == "gpu__time_duration.sum":
        v *= {"ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3}.get(u, 1e-3)
    else:
        v *= {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}.get(u, 1)
    by.setdefault(name, {}).setdefault(r[ii], {})[r[mi]] = v
print(f"# {L} layers, {T} tokens; per decode kernel (all launches): count, median us, median MB read, GB/s")
print("| kernel | launches | median us | MB read | GB/s | sum us |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
tot = 0
for name, ids in sorted(by.items(), key=lambda kv: -sum(x.get("gpu__time_duration.sum", 0) for x in kv[1].values())):
    t = [x.get("gpu__time_duration.sum", 0) for x in ids.values()]
    b = [x.get("dram__bytes_read.sum", 0) for x in ids.values()]
    mt, mb = statistics.median(t), statistics.median(b)
    tot += sum(t)
    print(f"| {name} | {len(t)} | {mt:.2f} | {mb/1e6:.2f} | {mb/mt/1e3 if mt else 0:.0f} | {sum(t):.0f} |")
print(f"total kernel time {tot:.0f} us")
PY
[ -n "${KEEP:-}" ] || rm -f "$m"
