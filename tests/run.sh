#!/usr/bin/env bash
# Runs every tests/t_*.sh. Each prints TAP-style lines, "ok - what" or "not ok - what";
# a script that exits non-zero counts as one more failure. Ends with "N passed, N failed".
cd "$(dirname "$0")/.." || exit 2
pass=0; fail=0; skip=0
for t in tests/t_*.sh; do
    [ -n "${ONLY:-}" ] && [[ "$t" != *"$ONLY"* ]] && continue
    echo "== $t"
    out=$(bash "$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -E '^(ok|not ok|# )' || true
    p=$(printf '%s\n' "$out" | grep -c '^ok ')
    f=$(printf '%s\n' "$out" | grep -c '^not ok ')
    s=$(printf '%s\n' "$out" | grep -c '^ok .*# SKIP')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "not ok - $t exited $rc"; printf '%s\n' "$out" | tail -20; f=1
    elif [ "$f" -gt 0 ]; then
        printf '%s\n' "$out" | grep -v -E '^(ok|# )' | tail -40
    fi
    pass=$((pass + p - s)); fail=$((fail + f)); skip=$((skip + s))
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
