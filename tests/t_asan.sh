#!/usr/bin/env bash
# The end-to-end tests again, on the AddressSanitizer + UndefinedBehaviorSanitizer
# build of the CPU runner (build/asan/qwen3moe, built by `make test`):
# tests/t_cli.sh and tests/t_bad_model.sh with QWEN3MOE_BIN pointing at it.
# Every sanitizer report makes the process exit 99 and is written to a log
# file of its own, so a report fails this script even where the test that
# caused it only looked at stdout; the reports are printed.
source "$(dirname "$0")/lib.sh"
ASAN_BIN=${QWEN3MOE_ASAN_BIN:-build/asan/qwen3moe}
# (re)build unless the caller named another binary; a no-op when up to date
if [ -z "${QWEN3MOE_ASAN_BIN:-}" ] || [ ! -x "$ASAN_BIN" ]; then
    make -s "$ASAN_BIN" >$TMP/build.log 2>&1 || { fail "build $ASAN_BIN: $(tail -3 $TMP/build.log)"; exit 1; }
fi
LOGS=$TMP/sanitizer-logs
mkdir -p $LOGS
# allocator_may_return_null: a refused huge allocation must reach the program's
# own "out of memory" error (exit 4), as with the ordinary allocator.
# detect_leaks=0: die() exits from deep inside, leaving what was allocated on
# the way (the process ends there); leaks are not what this run looks for.
export ASAN_OPTIONS="halt_on_error=1:exitcode=99:abort_on_error=0:allocator_may_return_null=1:detect_leaks=0:detect_stack_use_after_return=1:strict_string_checks=1:log_path=$LOGS/asan"
export UBSAN_OPTIONS="halt_on_error=1:exitcode=99:print_stacktrace=1:log_path=$LOGS/ubsan"

check "$ASAN_BIN is a sanitizer build" bash -c "nm -D '$ASAN_BIN' 2>/dev/null | grep -q __asan_init || nm '$ASAN_BIN' | grep -q __asan_init"

for t in tests/t_cli.sh tests/t_bad_model.sh; do
    [ -f "$t" ] || { echo "# $t missing: skipped"; continue; }
    out=$(QWEN3MOE_BIN=$ASAN_BIN bash "$t" 2>&1); rc=$?
    name=$(basename "$t" .sh)
    printf '%s\n' "$out" | sed -n -e "s/^ok - /ok - asan $name: /p" -e "s/^not ok - /not ok - asan $name: /p"
    nf=$(printf '%s\n' "$out" | grep -c '^not ok ')
    if [ "$rc" -ne 0 ] && [ "$nf" -eq 0 ]; then
        fail "asan $name: the script exited $rc"
        printf '%s\n' "$out" | tail -5 | sed 's/^/#   /'
    fi
done

reports=$(ls $LOGS 2>/dev/null)
if [ -z "$reports" ]; then
    ok "no AddressSanitizer / UndefinedBehaviorSanitizer report in any run"
else
    fail "sanitizer reports: $(echo $reports | wc -w) (shown below)"
    for f in $LOGS/*; do echo "# --- $f"; head -30 "$f" | sed 's/^/#   /'; done
fi
