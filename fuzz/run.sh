#!/usr/bin/env bash
# Runs one libFuzzer harness for a bounded time or number of executions, on one
# core, and reports the execution count.
#   fuzz/run.sh TARGET [SECONDS] [RUNS]
# TARGET is model, tokenizer or text (build/fuzz/fuzz_TARGET). The working
# corpus is build/fuzz-corpus/TARGET (seeded by fuzz/make_corpus.sh), crash
# inputs go to build/fuzz-artifacts/TARGET/, the log to build/fuzz-logs/TARGET.log.
# Exit 0 when no crash, leak, timeout or OOM was found; 1 otherwise.
set -u
cd "$(dirname "$0")/.."
T=$1; SECS=${2:-60}; RUNS=${3:--1}
BIN=build/fuzz/fuzz_$T
[ -x "$BIN" ] || { echo "fuzz/run.sh: $BIN missing (make fuzz-build)" >&2; exit 2; }
mkdir -p build/fuzz-corpus/$T build/fuzz-artifacts/$T build/fuzz-logs
LOG=build/fuzz-logs/$T.log
opts=(-max_total_time="$SECS" -runs="$RUNS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
      -artifact_prefix=build/fuzz-artifacts/$T/)
case $T in
    # die() leaves what the refused input allocated (the program exits there), so
    # leak checking is off for the harnesses that expect refusals
    model)     opts+=(-detect_leaks=0 -max_len=131072 -close_fd_mask=2) ;;
    text)      opts+=(-detect_leaks=0 -max_len=4096) ;;
    tokenizer) opts+=(-max_len=4096) ;;
esac
[ -f "fuzz/$T.dict" ] && opts+=(-dict=fuzz/$T.dict)
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_stack_use_after_return=1}
# -detect_leaks=0 only stops libFuzzer's per-input check; the sanitizer's own
# check at exit would still report what die() left behind
case $T in model|text) ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" ;; esac
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$BIN" "${opts[@]}" build/fuzz-corpus/$T >"$LOG" 2>&1
rc=$?
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOG" | grep -o '[0-9]*$' | tail -1)
[ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$LOG" | tail -1 | tr -d '#')
secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$LOG" | grep -o 'in [0-9]*' | grep -o '[0-9]*')
arts=$(ls build/fuzz-artifacts/$T | wc -l)
echo "fuzz_$T: ${execs:-?} executions in ${secs:-?} s, exit $rc, $arts artifact(s) in build/fuzz-artifacts/$T (log $LOG)"
if [ $rc -ne 0 ]; then grep -E 'ERROR|runtime error|fuzz property|SUMMARY|Test unit written' "$LOG" | head -20; exit 1; fi
exit 0
