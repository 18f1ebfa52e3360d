#!/usr/bin/env bash
# The GPU path as `make test` sees it. Without a CUDA device (CI, the dev machine):
# the runner falls back to the CPU with a notice, --gpu and --parity are clear
# errors, and the GPU suite is skipped with the reason. With one: tests/gpu/run.sh
# (kernel tests, --parity on two shapes and every quant type, compute-sanitizer).
source "$(dirname "$0")/lib.sh"
M=$MODELS/tiny-q8_0.gguf
[ -f $M ] || tests/gen_models.sh >/dev/null 2>&1
if nvidia-smi -L >/dev/null 2>&1; then
    make -s gpu-bins >/dev/null || { fail "make gpu-bins"; exit 1; }
    tests/gpu/run.sh | grep -E '^(ok|not ok|# )'
    exit 0
fi
run timeout 60 $BIN -m $M -p hi -n 2 --temp 0
check "no CUDA device: a notice on stderr, then the CPU path (exit 0)" \
    bash -c "[ $RC -eq 0 ] && grep -q 'no CUDA device found, using the CPU path' $TMP/err && [ -s $TMP/out ]"
run timeout 60 $BIN -m $M --cpu -p hi -n 2 --temp 0
check "--cpu: no notice" bash -c "[ $RC -eq 0 ] && ! grep -q 'no CUDA device' $TMP/err"
run timeout 60 $BIN -m $M --gpu -p hi -n 2
check "--gpu without a device: exit 4 naming the missing device" bash -c "[ $RC -eq 4 ] && grep -q 'no CUDA device' $TMP/err"
run timeout 60 $BIN -m $M --parity -p hi -n 2
check "--parity without a device: exit 4, a clear message" bash -c "[ $RC -eq 4 ] && grep -q 'needs a CUDA device' $TMP/err"
run timeout 120 $BIN -m $M --bench -p 16 -n 4
check "--bench without a device: benchmarks the CPU path (exit 0, pp16 and tg4 rows)" \
    bash -c "[ $RC -eq 0 ] && grep -q 'CPU, ' $TMP/err && grep -q 'pp16' $TMP/err && grep -q 'tg4' $TMP/err"
ok "GPU kernel, parity and compute-sanitizer tests # SKIP no CUDA device on this machine (they run on the device: make test-gpu)"
