# Shared helpers for the tests/t_*.sh scripts (sourced). TAP-ish output: "ok - what" / "not ok - what".
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
BIN=${QWEN3MOE_BIN:-./qwen3moe}
MODELS=build/models
PY=/usr/bin/python3   # the system python, which has numpy (python3-numpy)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ok()   { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
# check NAME CONDITION...: runs the condition, reports it
check() { local name=$1; shift; if "$@"; then ok "$name"; else fail "$name"; fi; }
# run CMD...: stdout to $TMP/out, stderr to $TMP/err, exit code to $RC
run() { "$@" >"$TMP/out" 2>"$TMP/err"; RC=$?; }
has_err() { grep -q -- "$1" "$TMP/err"; }
json_get() { $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$1" "$2"; }
