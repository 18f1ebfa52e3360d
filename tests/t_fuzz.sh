#!/usr/bin/env bash
# The fuzz harnesses in make test: every input that once crashed or broke a
# property (tests/regress/TARGET/*) is replayed through its harness, then each
# harness fuzzes for a few seconds from the generated seed corpus (a smoke run:
# the long campaigns are `make fuzz FUZZ_SECONDS=...`, see fuzz/README.md).
source "$(dirname "$0")/lib.sh"
if ! command -v clang >/dev/null || ! echo 'int LLVMFuzzerTestOneInput(const char*d,unsigned long n){return 0;}' |
        clang -x c -fsanitize=fuzzer -o $TMP/probe - 2>/dev/null; then
    ok "fuzz harnesses # SKIP clang with libFuzzer not installed (apt-get install clang libclang-rt-14-dev)"; exit 0
fi
run make -s fuzz-regress
check "make fuzz-regress: every regression input passes its harness" bash -c "[ $RC -eq 0 ] && grep -q 'fuzz-regress: ok' $TMP/out"
[ $RC -eq 0 ] || tail -20 $TMP/out $TMP/err
for t in model tokenizer text; do
    run bash fuzz/run.sh $t ${FUZZ_SMOKE_SECONDS:-10}
    check "fuzz_$t: $(grep -o '[0-9]* executions.*' $TMP/out | head -1), no crash" bash -c "[ $RC -eq 0 ]"
done
