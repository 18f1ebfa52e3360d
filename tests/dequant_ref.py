#!/usr/bin/env python3
"""Compare gguf.h's dequantization (records written by build/test_dequant) with
llama.cpp's own NumPy implementation in gguf-py (gguf/quants.py).

    dequant_ref.py GGUF_PY_DIR RECORDS.bin

GGUF_PY_DIR is the gguf-py directory of a llama.cpp checkout (the one holding
the gguf/ package). Prints TAP lines; exit status 1 if anything differs.

Agreement is required to be bitwise (NaN compared as "both NaN", since a NaN's
payload depends on operand order); on a mismatch the report gives the number of
differing values and the largest distance in float32 ulps. A self-check at the
end proves the comparison catches a one-ulp error and a half/pair layout mix-up.
"""
import sys
import types

import numpy as np


def load_quants(gguf_py_dir):
    # Import gguf/quants.py without running gguf/__init__.py, which pulls in
    # modules (writer, vocab, metadata) with extra dependencies we do not need.
    pkg = types.ModuleType("gguf")
    pkg.__path__ = [gguf_py_dir.rstrip("/") + "/gguf"]
    sys.modules["gguf"] = pkg
    import gguf.quants as quants  # noqa: E402
    import gguf.constants as constants  # noqa: E402
    return quants, constants


def ulp_distance(a, b):
    """Distance in float32 ulps between finite arrays (monotonic integer mapping)."""
    def key(x):
        i = x.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return np.abs(key(a) - key(b))


def compare(ours, ref):
    """(number of mismatches, max ulp distance among finite mismatches, first index)."""
    ours = ours.astype(np.float32, copy=False).ravel()
    ref = ref.astype(np.float32, copy=False).ravel()
    same_bits = ours.view(np.uint32) == ref.view(np.uint32)
    both_nan = np.isnan(ours) & np.isnan(ref)
    bad = ~(same_bits | both_nan)
    nbad = int(bad.sum())
    if nbad == 0:
        return 0, 0, -1
    fin = bad & np.isfinite(ours) & np.isfinite(ref)
    maxulp = int(ulp_distance(ours[fin], ref[fin]).max()) if fin.any() else -1
    return nbad, maxulp, int(np.argmax(bad))


def main():
    gguf_py, path = sys.argv[1], sys.argv[2]
    quants, constants = load_quants(gguf_py)
    np.seterr(all="ignore")  # inf/NaN scales are part of the test
    Q = constants.GGMLQuantizationType
    sizes = constants.GGML_QUANT_SIZES
    fails = 0
    saved = {}

    def ok(cond, msg):
        nonlocal fails
        print(("ok - " if cond else "not ok - ") + msg)
        if not cond:
            fails += 1

    data = open(path, "rb").read()
    assert data[:4] == b"DQR1", "not a test_dequant record file"
    pos = 4
    seen = set()
    while pos < len(data):
        kind, typ = np.frombuffer(data, dtype="<u4", count=2, offset=pos).tolist()
        count = int(np.frombuffer(data, dtype="<u8", count=1, offset=pos + 8)[0])
        pos += 16
        if kind == 0:
            qt = Q(typ)
            bs, ts = sizes[qt]
            raw = np.frombuffer(data, dtype=np.uint8, count=count * ts, offset=pos).reshape(count, ts)
            pos += count * ts
            ours = np.frombuffer(data, dtype="<f4", count=count * bs, offset=pos).reshape(count, bs)
            pos += count * bs * 4
            # gguf-py's entry point; F32/F16 are plain NumPy views/casts there
            ref = quants.dequantize(raw, qt).reshape(count, bs)
            nbad, maxulp, first = compare(ours, ref)
            seen.add(qt.name)
            saved[qt.name] = (raw, ours, ref)
            if nbad == 0:
                ok(True, f"dequant {qt.name}: {count} blocks ({count * bs} values) bitwise equal to gguf-py")
            else:
                blk = first // bs
                ok(False, f"dequant {qt.name}: {nbad} of {count * bs} values differ from gguf-py, "
                          f"max {maxulp} ulp; first at block {blk} element {first % bs}: "
                          f"ours {ours.ravel()[first]!r} ref {ref.ravel()[first]!r} "
                          f"block bytes {raw[blk].tobytes().hex()}")
        elif kind == 1:
            x = np.frombuffer(data, dtype="<f4", count=count, offset=pos); pos += 4 * count
            h = np.frombuffer(data, dtype="<u2", count=count, offset=pos); pos += 2 * count
            bf = np.frombuffer(data, dtype="<u2", count=count, offset=pos); pos += 2 * count
            with np.errstate(over="ignore", invalid="ignore"):
                ref_h = x.astype(np.float16)
            ours_h = h.view(np.float16)
            bad = ~((ours_h.view(np.uint16) == ref_h.view(np.uint16)) | (np.isnan(ours_h) & np.isnan(ref_h)))
            ok(not bad.any(), f"gguf_f32_to_f16 equals NumPy's float32->float16 (round to nearest even) "
                              f"on {count} values" + (f": {int(bad.sum())} differ, e.g. {x[bad][:3]!r}" if bad.any() else ""))
            ref_bf = quants.BF16.quantize_blocks(x.copy().reshape(1, -1)).view(np.uint16).ravel()
            bad = bf != ref_bf
            ok(not bad.any(), f"gguf_f32_to_bf16 equals gguf-py's BF16 quantization on {count} values"
                              + (f": {int(bad.sum())} differ, e.g. {x[bad][:3]!r}" if bad.any() else ""))
        else:
            raise SystemExit(f"bad record kind {kind}")

    want = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K",
            "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"}
    ok(seen == want, f"all 15 supported types compared ({len(seen)} seen)"
                     + (f"; missing {sorted(want - seen)}" if want - seen else ""))

    # Self-check: the comparison must notice small and structural errors.
    if "Q4_K" in saved:
        raw, ours, ref = saved["Q4_K"]
        bent = ref.copy().ravel()
        i = int(np.flatnonzero(np.isfinite(bent) & (bent != 0))[0])
        bent.view(np.uint32)[i] ^= 1
        ok(compare(bent, ref)[0] == 1, "self-check: a one-ulp change in one Q4_K value is detected")
    if "Q4_0" in saved:
        raw, ours, ref = saved["Q4_0"]
        # what a decoder that takes adjacent nibble pairs (instead of low/high halves) would give
        swapped = ref.reshape(-1, 2, 16).transpose(0, 2, 1).reshape(ref.shape)
        ok(compare(swapped, ref)[0] > 0, "self-check: Q4_0 with interleaved instead of half-split nibbles is detected")

    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
