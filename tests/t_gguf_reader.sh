#!/usr/bin/env bash
# The GGUF reader (gguf.h) on small good files and hostile ones written by
# tests/make_bad_gguf.py: exit status and a distinctive part of each message
# (offsets, names). Every case runs twice: the normal build under `ulimit -v`
# (a giant allocation from a hostile count would fail), and an AddressSanitizer +
# UBSan build with allocations over 64 MB forbidden and leak checking on.
# With llama.cpp's gguf-py available, gguf-py's reader must see the same KVs and
# tensors in the good files, and our reader must read a file from gguf-py's writer.
cd "$(dirname "$0")/.." || exit 2
D=build/gguf_cases
mkdir -p build/asan
CC=${CC:-cc}

PY=
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || PY=python3

[ -x build/gguf_dump ] && [ build/gguf_dump -nt gguf.h ] && [ build/gguf_dump -nt tests/gguf_dump.c ] \
    || make -s -B build/gguf_dump >&2 || { echo "not ok - build build/gguf_dump"; exit 1; }
SAN=clang; command -v clang >/dev/null || SAN=$CC
ASAN_BIN=build/asan/gguf_dump
if ! $SAN -O1 -g -std=gnu11 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
        -I. -o $ASAN_BIN tests/gguf_dump.c -lm 2>build/asan/gguf_dump.log; then
    echo "not ok - sanitizer build of gguf_dump"; cat build/asan/gguf_dump.log; ASAN_BIN=
fi

rm -rf "$D"
"$PY" tests/make_bad_gguf.py make "$D" >/dev/null || { echo "not ok - make_bad_gguf.py make"; exit 1; }

# check NAME RC OUTPUT PATTERNS...: exit status and every pattern present
check() {
    local what=$1 want=$2 rc=$3 out=$4; shift 4
    local missing=
    for pat in "$@"; do
        grep -qF -- "$pat" <<<"$out" || missing+="  missing: $pat"$'\n'
    done
    if [ "$rc" = "$want" ] && [ -z "$missing" ] && ! grep -qE 'Sanitizer|runtime error:' <<<"$out"; then
        echo "ok - $what"
    else
        echo "not ok - $what (exit $rc, expected $want)"
        printf '%s' "$missing"; printf '%s\n' "$out" | head -15 | sed 's/^/  | /'
    fi
}

n=0
while IFS=$'\t' read -r name want pats; do
    IFS=$'\t' read -r -a patterns <<<"$pats"
    f=$D/$name.gguf
    # 256 MB of address space: plenty for these files, far too little for a
    # count-sized allocation of a hostile header
    out=$( (ulimit -v 262144; build/gguf_dump --check "$f") 2>&1 ); rc=$?
    check "$name: gguf_dump exits $want" "$want" "$rc" "$out" "${patterns[@]}"
    if [ -n "$ASAN_BIN" ]; then
        out=$(ASAN_OPTIONS=detect_leaks=1:max_allocation_size_mb=64:allocator_may_return_null=0:exitcode=86 \
              UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=87 $ASAN_BIN --check "$f" 2>&1); rc=$?
        check "$name: sanitizer build exits $want, no sanitizer report" "$want" "$rc" "$out" "${patterns[@]}"
    fi
    n=$((n + 1))
done < "$D/cases.tsv"
[ "$n" -gt 50 ] && echo "ok - $n reader cases run" || echo "not ok - only $n reader cases run"

# Every prefix of good files (each in an exact-size heap buffer, in one sanitizer
# process) must fail with an offset until it holds all tensor data; random
# damage to a good file must never crash the reader or the dequantizer.
BIN=${ASAN_BIN:-build/gguf_dump}
for g in good_v3:1 good_many:41; do
    out=$(ASAN_OPTIONS=detect_leaks=1 $BIN --prefixes $D/${g%:*}.gguf ${g#*:} 2>&1); rc=$?
    check "${g%:*}: every prefix (step ${g#*:}) fails cleanly with an offset, the full data parses" 0 $rc "$out" "0 unexpected"
done
out=$(ASAN_OPTIONS=detect_leaks=1 $BIN --mutate 20000 12345 $D/good_v3.gguf 2>&1); rc=$?
check "good_v3: 20000 randomly damaged copies never crash the reader" 0 $rc "$out" "no crash"

# cross-checks against llama.cpp's gguf-py reader and writer
gguf_py=$(tests/dequant_ref_gguf_py.sh 2>/dev/null) || gguf_py=
if [ -z "$gguf_py" ] || ! "$PY" -c 'import numpy' 2>/dev/null; then
    echo "ok - gguf-py cross-checks # SKIP no llama.cpp gguf-py or numpy"
else
    for g in good_v3 good_v2 good_align1 good_unsupported_type; do
        build/gguf_dump "$D/$g.gguf" > "$D/$g.dump" 2>&1
        if res=$("$PY" tests/make_bad_gguf.py crosscheck "$gguf_py" "$D/$g.gguf" "$D/$g.dump" 2>&1); then
            echo "ok - $g: gguf-py's GGUFReader sees the same KVs, values and tensor infos"
        else
            echo "not ok - $g: gguf-py's GGUFReader disagrees"; printf '%s\n' "$res" | head -20
        fi
    done
    if "$PY" tests/make_bad_gguf.py pywriter "$gguf_py" "$D/pywriter.gguf" >/dev/null 2>&1 &&
       build/gguf_dump --check "$D/pywriter.gguf" > "$D/pywriter.dump" 2>&1 &&
       res=$("$PY" tests/make_bad_gguf.py crosscheck "$gguf_py" "$D/pywriter.gguf" "$D/pywriter.dump" 2>&1) &&
       grep -q 'tokenizer.ggml.tokens ARRAY\[STRING x 3\] \["hello", "world", "<|im_start|>"\]' "$D/pywriter.dump"; then
        echo "ok - a file written by gguf-py's GGUFWriter reads back identically"
    else
        echo "not ok - file from gguf-py's GGUFWriter"; cat "$D/pywriter.dump" | head -20; printf '%s\n' "$res" | head
    fi
fi
exit 0
