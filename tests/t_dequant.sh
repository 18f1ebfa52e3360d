#!/usr/bin/env bash
# Dequantization of every supported type (gguf.h) against llama.cpp's own NumPy
# implementation (gguf-py), bitwise; randquant's spread; f32->f16/bf16 rounding.
# The C side runs three builds: the Makefile's (gcc -O3 -march=native), clang -O3,
# and an AddressSanitizer+UBSan build (shifts, aliasing and bounds of the decoders).
cd "$(dirname "$0")/.." || exit 2
mkdir -p build/asan
CC=${CC:-cc}

PY=
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done

[ -x build/test_dequant ] && [ build/test_dequant -nt gguf.h ] && [ build/test_dequant -nt tests/test_dequant.c ] \
    && [ build/test_dequant -nt tests/randquant.h ] || make -s -B build/test_dequant >&2 \
    || { echo "not ok - build build/test_dequant"; exit 1; }

builds=(build/test_dequant)
if command -v clang >/dev/null; then
    if clang -O3 -march=native -std=gnu11 -I. -o build/test_dequant_clang tests/test_dequant.c -lm 2>build/test_dequant_clang.log; then
        builds+=(build/test_dequant_clang)
    else
        echo "not ok - clang build of test_dequant"; cat build/test_dequant_clang.log
    fi
fi
SAN=clang; command -v clang >/dev/null || SAN=$CC
if $SAN -O1 -g -std=gnu11 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
        -I. -o build/asan/test_dequant tests/test_dequant.c -lm 2>build/asan/test_dequant.log; then
    builds+=(build/asan/test_dequant)
else
    echo "not ok - sanitizer build of test_dequant"; cat build/asan/test_dequant.log
fi

gguf_py=$(tests/dequant_ref_gguf_py.sh) || gguf_py=
for b in "${builds[@]}"; do
    tag=${b#build/}
    out=build/dequant_records_${tag//\//_}.bin
    res=$(ASAN_OPTIONS=detect_leaks=1 "$b" "$out" 2>&1); rc=$?
    if [ "$b" = build/test_dequant ]; then
        printf '%s\n' "$res"          # the self-checks, once
    else
        printf '%s\n' "$res" | grep -v '^ok' | sed "s|^|[$tag] |"
        [ $rc -eq 0 ] && echo "ok - $tag: self-checks pass" || echo "not ok - $tag: self-checks (exit $rc)"
    fi
    if [ -z "$PY" ] || [ -z "$gguf_py" ]; then
        echo "ok - $tag vs gguf-py # SKIP ${PY:+no llama.cpp gguf-py}${PY:-no python3 with numpy}"
    else
        "$PY" tests/dequant_ref.py "$gguf_py" "$out" 2>&1 | sed "s|^ok - |ok - [$tag] |; s|^not ok - |not ok - [$tag] |"
    fi
done
exit 0
