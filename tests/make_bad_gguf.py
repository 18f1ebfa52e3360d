#!/usr/bin/env python3
"""Small good and hostile GGUF files for tests/t_gguf_reader.sh.

    make_bad_gguf.py make DIR
        writes DIR/*.gguf and DIR/cases.tsv: one line per file,
        "name<TAB>expected exit code<TAB>pattern<TAB>pattern...", where every
        pattern must appear in gguf_dump's output (stdout + stderr).
    make_bad_gguf.py crosscheck GGUF_PY_DIR FILE DUMP_OUTPUT
        reads FILE with llama.cpp's gguf-py GGUFReader and compares its keys,
        value types, scalar/string values, array shapes and tensor infos with
        the lines of `gguf_dump FILE` in DUMP_OUTPUT. Exit 0 if they agree.
    make_bad_gguf.py pywriter GGUF_PY_DIR FILE
        writes FILE with gguf-py's GGUFWriter (a file from the reference writer).

The files are built by hand with struct so that every field can be bent; the
builder records the offset of every field so the expected error messages can
name exact offsets.
"""
import os
import random
import struct
import sys

KV = dict(UINT8=0, INT8=1, UINT16=2, INT16=3, UINT32=4, INT32=5, FLOAT32=6, BOOL=7,
          STRING=8, ARRAY=9, UINT64=10, INT64=11, FLOAT64=12)
KV_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B",
          10: "<Q", 11: "<q", 12: "<d"}
# ggml type: (id, block size, bytes per block)
GT = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20),
      "q5_0": (6, 32, 22), "q5_1": (7, 32, 24), "q8_0": (8, 32, 34), "q2_K": (10, 256, 84),
      "q3_K": (11, 256, 110), "q4_K": (12, 256, 144), "q5_K": (13, 256, 176),
      "q6_K": (14, 256, 210), "q8_K": (15, 256, 292), "iq4_nl": (20, 32, 18),
      "iq4_xs": (23, 256, 136), "i32": (26, 1, 4), "bf16": (30, 1, 2)}


def gstr(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    """Serialize a value of KV type t. Arrays: v = (elem_type, [values])."""
    if t == KV["STRING"]:
        return gstr(v)
    if t == KV["ARRAY"]:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, x) for x in items)
    return struct.pack(KV_FMT[t], v)


class Builder:
    """Collects KVs and tensors; build() returns the file bytes and a dict of
    field offsets ("kv1", "kv1.type", "kv1.val", "t0", "t0.ndims", "t0.ne1",
    "t0.type", "t0.offset", "data")."""

    def __init__(self, version=3, alignment=32):
        self.version = version
        self.alignment = alignment
        self.kvs = []      # (key, type, value) or (key, type, raw bytes) with raw=True
        self.tensors = []  # dicts: name, ne, type (name or id), offset, data, n_dims

    def kv(self, key, t, v, raw=False):
        self.kvs.append((key, t, v, raw))
        return self

    def tensor(self, name, ne, typ, **kw):
        self.tensors.append(dict(name=name, ne=list(ne), type=typ, **kw))
        return self

    @staticmethod
    def nbytes(typ, ne):
        _, bs, ts = GT[typ]
        if not ne:
            return 0
        n = 1
        for x in ne[1:]:
            n *= x
        return ne[0] // bs * ts * n

    def build(self, n_kv=None, n_tensors=None, data_pad=True):
        m = {}
        out = bytearray(b"GGUF" + struct.pack("<I", self.version))
        out += struct.pack("<QQ", len(self.tensors) if n_tensors is None else n_tensors,
                           len(self.kvs) if n_kv is None else n_kv)
        for i, (key, t, v, raw) in enumerate(self.kvs):
            m[f"kv{i}"] = len(out)
            out += gstr(key)
            m[f"kv{i}.type"] = len(out)
            out += struct.pack("<I", t)
            m[f"kv{i}.val"] = len(out)
            out += v if raw else value(t, v)
        # data layout: each tensor aligned
        off = 0
        offs = []
        for t in self.tensors:
            if t.get("offset") is not None:
                offs.append(t["offset"])
                continue
            offs.append(off)
            nb = self.nbytes(t["type"], t["ne"]) if isinstance(t["type"], str) else 64
            off += (nb + self.alignment - 1) // self.alignment * self.alignment
        for i, t in enumerate(self.tensors):
            m[f"t{i}"] = len(out)
            out += gstr(t["name"])
            m[f"t{i}.ndims"] = len(out)
            out += struct.pack("<I", t.get("n_dims", len(t["ne"])))
            for d, x in enumerate(t["ne"]):
                m[f"t{i}.ne{d}"] = len(out)
                out += struct.pack("<Q", x & 0xFFFFFFFFFFFFFFFF)
            m[f"t{i}.type"] = len(out)
            typ = t["type"]
            out += struct.pack("<I", GT[typ][0] if isinstance(typ, str) else typ)
            m[f"t{i}.offset"] = len(out)
            out += struct.pack("<Q", offs[i])
        m["infos_end"] = len(out)
        if data_pad:
            out += b"\0" * ((-len(out)) % self.alignment)
        m["data"] = len(out)
        rng = random.Random(len(out))
        blob = bytearray()
        for i, t in enumerate(self.tensors):
            if t.get("offset") is not None or not isinstance(t["type"], str):
                continue
            nb = self.nbytes(t["type"], t["ne"])
            if nb > 1 << 20:   # absurd shapes of hostile files: no data
                continue
            blob += b"\0" * (offs[i] - len(blob))
            blob += t.get("data") or rng.randbytes(nb)
        if self.tensors:
            blob += b"\0" * ((-len(blob)) % self.alignment)
        out += blob
        m["end"] = len(out)
        return bytes(out), m


def full_builder(version=3, alignment=64):
    """A good file with every KV type, arrays of strings, nested arrays, a
    non-default alignment and tensors of every supported type (plus two known
    but unsupported ones)."""
    b = Builder(version, alignment)
    b.kv("general.architecture", KV["STRING"], "qwen3moe")
    b.kv("general.alignment", KV["UINT32"], alignment)
    b.kv("test.u8", KV["UINT8"], 200).kv("test.i8", KV["INT8"], -5)
    b.kv("test.u16", KV["UINT16"], 65535).kv("test.i16", KV["INT16"], -32768)
    b.kv("test.u32", KV["UINT32"], 4000000000).kv("test.i32", KV["INT32"], -2000000000)
    b.kv("test.u64", KV["UINT64"], 18446744073709551615).kv("test.i64", KV["INT64"], -9223372036854775808)
    b.kv("test.f32", KV["FLOAT32"], 0.1).kv("test.f64", KV["FLOAT64"], 1e-300)
    b.kv("test.bool", KV["BOOL"], 1)
    b.kv("test.str_utf8", KV["STRING"], "h\u00e9llo \u4e16\u754c \"q\"")
    b.kv("test.str_empty", KV["STRING"], "")
    b.kv("test.arr_i32", KV["ARRAY"], (KV["INT32"], [1, -2, 3, 4, 5, 6, 7, 8, 9]))
    b.kv("test.arr_f32", KV["ARRAY"], (KV["FLOAT32"], [0.5, -1.25]))
    b.kv("test.arr_bool", KV["ARRAY"], (KV["BOOL"], [1, 0, 1]))
    b.kv("test.arr_u64", KV["ARRAY"], (KV["UINT64"], [1 << 63]))
    b.kv("test.arr_empty", KV["ARRAY"], (KV["UINT8"], []))
    b.kv("tokenizer.ggml.tokens", KV["ARRAY"], (KV["STRING"], ["a", "", "<|im_end|>", "\u0120the"]))
    b.kv("test.nested", KV["ARRAY"], (KV["ARRAY"], [(KV["INT32"], [1, 2]), (KV["STRING"], ["x", "yz"]),
                                                   (KV["ARRAY"], [(KV["UINT8"], [7])])]))
    b.kv("test.nested_empty", KV["ARRAY"], (KV["ARRAY"], []))
    shapes = {"f32": [8], "f16": [4, 3], "bf16": [16, 1, 1, 2], "q8_0": [64, 2], "q4_0": [32, 3],
              "q4_1": [32, 1], "q5_0": [64], "q5_1": [32, 2], "q2_K": [256, 1], "q3_K": [256, 2],
              "q4_K": [256, 2], "q5_K": [512], "q6_K": [256, 3, 2], "iq4_nl": [32, 4],
              "iq4_xs": [256, 1], "q8_K": [256], "i32": [5]}
    for i, (typ, ne) in enumerate(shapes.items()):
        b.tensor(f"blk.{i}.{typ}.weight", ne, typ)
    return b


def min_builder(version=3):
    b = Builder(version)
    b.kv("general.architecture", KV["STRING"], "qwen3moe")
    b.tensor("token_embd.weight", [32, 2], "q8_0")
    return b


def padded_builder(n_extra_kv=1, tensors=2):
    """KV 0 is a 600-byte string so that truncating a later field still leaves the
    counts plausible (they are checked against the bytes left before parsing)."""
    b = Builder()
    b.kv("test.padding", KV["STRING"], "p" * 600)
    for i in range(n_extra_kv):
        b.kv(f"test.k{i + 1}", KV["UINT32"], 7)
    for i in range(tensors):
        b.tensor(f"blk.{i}.attn_q.weight", [32, 2], "q8_0")
    return b


def make(d):
    os.makedirs(d, exist_ok=True)
    cases = []

    def add(name, data, rc, *patterns):
        with open(os.path.join(d, name + ".gguf"), "wb") as f:
            f.write(data)
        cases.append((name, rc) + tuple(patterns))

    # ---- good files
    data, m = full_builder(3, 64).build()
    add("good_v3", data, 0, "version 3", "alignment 64", f"data_offset {m['data']}",
        "test.i8 INT8 -5", "test.u64 UINT64 18446744073709551615", "test.i64 INT64 -9223372036854775808",
        "test.f32 FLOAT32 0.100000001", "test.f64 FLOAT64 1e-300", "test.bool BOOL true",
        'test.str_utf8 STRING "h\\xc3\\xa9llo', 'test.str_empty STRING ""',
        "test.arr_i32 ARRAY[INT32 x 9] [1, -2, 3, 4, 5, 6, 7, 8, ...]",
        'tokenizer.ggml.tokens ARRAY[STRING x 4] ["a", "", "<|im_end|>", "\\xc4\\xa0the"]',
        "test.nested ARRAY[ARRAY x 3] (nested arrays, skipped)", "test.arr_empty ARRAY[UINT8 x 0] []",
        f"tensor @{m['t12']} blk.12.q6_K.weight q6_K [256, 3, 2]", "blk.15.q8_K.weight q8_K [256]",
        "check: lookups ok", "get_int(general.alignment)=1", "get_str(general.architecture)=1",
        "get_arr(tokenizer.ggml.tokens)=1", "get_int(missing)=0", "dequantized 30 rows")
    data, m = full_builder(2, 32).build()
    add("good_v2", data, 0, "version 2", "alignment 32", "check: lookups ok")
    b = Builder(alignment=1).kv("general.architecture", KV["STRING"], "x").kv("general.alignment", KV["UINT32"], 1)
    b.tensor("a", [3], "f32").tensor("b", [5], "f16")
    add("good_align1", b.build()[0], 0, "alignment 1", "tensor @", "b f16 [5] offset 12 nbytes 10")
    b = Builder().kv("general.name", KV["STRING"], "kv only")
    add("good_no_tensors", b.build(data_pad=False)[0], 0, "n_tensors 0", 'general.name STRING "kv only"')
    add("good_empty", Builder().build()[0], 0, "n_kv 0", "n_tensors 0")
    # more entries than the first allocation (64): the arrays and lookup maps grow
    b = Builder()
    for i in range(300):
        b.kv(f"test.key{i}", KV["UINT32"], i)
    for i in range(200):
        b.tensor(f"blk.{i}.w", [32], "f32")
    add("good_many", b.build()[0], 0, "n_kv 300", "n_tensors 200", "test.key299 UINT32 299",
        "blk.199.w f32 [32]", "check: lookups ok", "dequantized 400 rows")
    b = Builder()
    for i in range(150):
        b.kv(f"test.key{i}", KV["UINT32"], i)
    b.kv("test.key3", KV["UINT32"], 0)
    for i in range(100):
        b.tensor(f"blk.{i}.w", [32], "f32")
    b.tensor("blk.70.w", [32], "f32")
    data, m = b.build()
    add("bad_dup_key_late", data, 1, f"duplicate key 'test.key3' at offset {m['kv150']} (first defined at offset {m['kv3']})")
    b.kvs.pop()
    data, m = b.build()
    add("bad_dup_tensor_late", data, 1,
        f"duplicate tensor name 'blk.70.w' at offset {m['t100']} (first defined at offset {m['t70']})")
    b = Builder().tensor("n" * 256, [32], "f32")
    add("good_name256", b.build()[0], 0, "n" * 256 + " f32 [32]")

    # ---- not GGUF / header
    add("bad_empty", b"", 1, "the file is empty")
    add("bad_tiny", b"GG", 1, "expected 4-byte magic 'GGUF' at offset 0, but the file ends at 2")
    add("bad_magic", b"GGML" + b"\0" * 60, 1, "not a GGUF file: expected magic 'GGUF' at offset 0, found bytes 47 47 4d 4c")
    good, m = min_builder().build()
    add("bad_version1", good[:4] + struct.pack("<I", 1) + good[8:], 1, "unsupported GGUF version 1 at offset 4",
        "expected 2 or 3")
    add("bad_version4", good[:4] + struct.pack("<I", 4) + good[8:], 1, "unsupported GGUF version 4 at offset 4")
    add("bad_version_be", good[:4] + struct.pack(">I", 3) + good[8:], 1, "unsupported GGUF version 50331648",
        "big-endian")
    add("trunc_version", good[:6], 1, "expected 4-byte version at offset 4, but the file ends at 6")
    add("trunc_header_ntensors", good[:12], 1, "expected 8-byte tensor count at offset 8, but the file ends at 12")
    add("trunc_header_nkv", good[:20], 1, "expected 8-byte KV count at offset 16, but the file ends at 20")

    # ---- absurd counts (must fail before allocating; the test runs these under ulimit -v)
    add("absurd_nkv", min_builder().build(n_kv=1 << 63)[0], 1, "KV count 9223372036854775808 at offset 16 is impossible")
    add("absurd_nkv_max", min_builder().build(n_kv=(1 << 64) - 1)[0], 1, "KV count 18446744073709551615 at offset 16")
    add("absurd_ntensors", min_builder().build(n_tensors=1 << 40)[0], 1,
        "tensor count 1099511627776 at offset 8 is impossible")
    data, m = min_builder().build()
    left = len(data) - 24
    add("absurd_nkv_by_one", min_builder().build(n_kv=left // 13 + 1)[0], 1,
        f"KV count {left // 13 + 1} at offset 16 is impossible: the {left} bytes that follow hold at most {left // 13}")

    # ---- truncated inside the KV section
    data, m = padded_builder(2).build()
    add("trunc_kv_keylen", data[:m["kv1"] + 5], 1,
        f"expected 8-byte string length (key of KV 1) at offset {m['kv1']}, but the file ends at {m['kv1'] + 5}")
    add("trunc_kv_key", data[:m["kv1"] + 10], 1,
        f"string length 7 (key of KV 1) at offset {m['kv1']} runs past the end of the file: only 2 bytes follow")
    add("trunc_kv_type", data[:m["kv1.type"] + 2], 1,
        f"expected 4-byte value type of KV 'test.k1' at offset {m['kv1.type']}, but the file ends at {m['kv1.type'] + 2}")
    add("trunc_kv_value", data[:m["kv1.val"] + 3], 1,
        f"expected 4-byte UINT32 value of KV 'test.k1' at offset {m['kv1.val']}, but the file ends at {m['kv1.val'] + 3}")
    data, m = padded_builder(0).kv("test.s", KV["STRING"], "hello" * 20).build()
    add("trunc_kv_strlen", data[:m["kv1.val"] + 4], 1,
        f"expected 8-byte string length (value of KV 'test.s') at offset {m['kv1.val']}, "
        f"but the file ends at {m['kv1.val'] + 4}")
    add("trunc_kv_strbody", data[:m["kv1.val"] + 50], 1,
        f"string length 100 (value of KV 'test.s') at offset {m['kv1.val']} runs past the end of the file: "
        "only 42 bytes follow")

    b = padded_builder(0).kv("test.big", KV["STRING"], struct.pack("<Q", 1000000) + b"abc", raw=True)
    data, m = b.build()
    add("bad_strlen_past_end", data, 1,
        f"string length 1000000 (value of KV 'test.big') at offset {m['kv1.val']} runs past the end of the file")
    b = padded_builder(0).kv("test.big", KV["STRING"], struct.pack("<Q", (1 << 64) - 1), raw=True)
    data, m = b.build()
    add("bad_strlen_max", data, 1, f"string length 18446744073709551615 (value of KV 'test.big') at offset {m['kv1.val']}")
    b = padded_builder(0).kv("test.badtype", 13, b"\0" * 8, raw=True)
    data, m = b.build()
    add("bad_kv_type", data, 1, f"KV 'test.badtype' has unknown value type id 13 at offset {m['kv1.type']}")
    b = padded_builder(0).kv("test.k\0ey", KV["UINT8"], 1)
    add("bad_key_nul", b.build()[0], 1, "key of KV 1 at offset", "contains a NUL byte")

    # ---- arrays
    b = padded_builder(0).kv("test.arr", KV["ARRAY"], struct.pack("<IQ", KV["INT32"], 100) + b"\0" * 40, raw=True)
    data, m = b.build(n_tensors=0)
    add("trunc_array", data[:m["kv1.val"] + 12 + 40], 1,
        f"KV 'test.arr': array of 100 INT32 at offset {m['kv1.val']} needs 100 x 4 bytes, but only 40 bytes follow")
    add("trunc_array_header", data[:m["kv1.val"] + 6], 1,
        f"expected 8-byte array element count at offset {m['kv1.val'] + 4}")
    b = padded_builder(0).kv("test.arr", KV["ARRAY"], struct.pack("<IQ", KV["UINT64"], 1 << 62), raw=True)
    data, m = b.build()
    add("bad_array_huge", data, 1, f"KV 'test.arr': array of 4611686018427387904 UINT64 at offset {m['kv1.val']}")
    b = padded_builder(0).kv("test.arr", KV["ARRAY"], struct.pack("<IQ", KV["STRING"], 1 << 60), raw=True)
    data, m = b.build()
    add("bad_array_str_huge", data, 1, "KV 'test.arr': array of 1152921504606846976 strings", "cannot fit")
    b = padded_builder(0).kv("test.arr", KV["ARRAY"], (KV["STRING"], ["ab", "cd", "ef"]))
    data, m = b.build(n_tensors=0)
    add("trunc_array_str", data[:m["kv1.val"] + 12 + 10 + 10 + 7], 1,
        "expected 8-byte string length (element 2 of array 'test.arr')")
    b = padded_builder(0).kv("test.arr", KV["ARRAY"], struct.pack("<IQ", 77, 1), raw=True)
    data, m = b.build()
    add("bad_array_type", data, 1, f"KV 'test.arr': unknown array element type id 77 at offset {m['kv1.val']}")
    deep = (KV["INT32"], [1])
    for _ in range(9):
        deep = (KV["ARRAY"], [deep])
    b = padded_builder(0).kv("test.deep", KV["ARRAY"], deep)
    add("bad_array_deep", b.build()[0], 1, "KV 'test.deep': arrays nested deeper than 8 levels")
    b = padded_builder(0).kv("test.nest", KV["ARRAY"], (KV["ARRAY"], [(KV["INT32"], [1, 2]), (KV["INT64"], [3, 4])]))
    data, m = b.build(n_tensors=0)
    inner2 = m["kv1.val"] + 12 + (12 + 8)
    add("trunc_array_nested", data[:inner2 + 12 + 9], 1,
        f"KV 'test.nest': array of 2 INT64 at offset {inner2} needs 2 x 8 bytes, but only 9 bytes follow")
    b = padded_builder(0).kv("test.nest", KV["ARRAY"], struct.pack("<IQ", KV["ARRAY"], 1 << 50), raw=True)
    add("bad_array_nested_huge", b.build()[0], 1, "array of 1125899906842624 arrays", "cannot fit")

    # ---- duplicates, alignment
    b = padded_builder(0).kv("general.name", KV["STRING"], "a").kv("general.name", KV["STRING"], "b")
    data, m = b.build()
    add("bad_dup_key", data, 1, f"duplicate key 'general.name' at offset {m['kv2']} (first defined at offset {m['kv1']})")
    for nm, t, v, pat in [("bad_align_zero", KV["UINT32"], struct.pack("<I", 0), "is 0, expected a non-zero power of two"),
                          ("bad_align_48", KV["UINT32"], struct.pack("<I", 48), "is 48, expected a non-zero power of two"),
                          ("bad_align_type", KV["UINT64"], struct.pack("<Q", 32), "must be UINT32, found UINT64")]:
        b = padded_builder(0).kv("general.alignment", t, v, raw=True)
        data, m = b.build()
        add(nm, data, 1, f"general.alignment at offset {m['kv1'] if 'type' in nm else m['kv1.val']}", pat)

    # ---- truncated inside the tensor infos
    data, m = padded_builder(0, tensors=3).build()
    add("trunc_tensor_namelen", data[:m["t1"] + 4], 1,
        f"expected 8-byte string length (name of tensor 1) at offset {m['t1']}, but the file ends at {m['t1'] + 4}")
    add("trunc_tensor_name", data[:m["t1"] + 12], 1,
        f"string length 19 (name of tensor 1) at offset {m['t1']} runs past the end of the file: only 4 bytes follow")
    add("trunc_tensor_ndims", data[:m["t1.ndims"] + 1], 1,
        f"expected 4-byte n_dims of tensor 'blk.1.attn_q.weight' at offset {m['t1.ndims']}")
    add("trunc_tensor_ne", data[:m["t1.ne1"] + 7], 1,
        f"expected 8-byte ne[1] of tensor 'blk.1.attn_q.weight' at offset {m['t1.ne1']}, but the file ends at {m['t1.ne1'] + 7}")
    add("trunc_tensor_type", data[:m["t2.type"]], 1,
        f"expected 4-byte type of tensor 'blk.2.attn_q.weight' at offset {m['t2.type']}")
    add("trunc_tensor_offset", data[:m["t2.offset"] + 4], 1,
        f"expected 8-byte data offset of tensor 'blk.2.attn_q.weight' at offset {m['t2.offset']}")
    add("trunc_before_data", data[:m["infos_end"] + 1], 1,
        f"expected the data section at offset {m['data']} (tensor infos end at {m['infos_end']}, aligned to 32), "
        f"but the file ends at {m['infos_end'] + 1}")
    add("trunc_data", data[:m["end"] - 40], 1,
        f"tensor 'blk.2.attn_q.weight' (info at offset {m['t2']}) has data at offset 192 of the data section "
        f"(which starts at {m['data']}) with 68 bytes, running past the end of the file at {m['end'] - 40}")

    # ---- bad tensor infos
    def one_tensor(name="blk.0.attn_q.weight", ne=(32, 2), typ="q8_0", **kw):
        b = padded_builder(0, tensors=0)
        b.tensor(name, ne, typ, **kw)
        return b.build()

    data, m = one_tensor(typ=99)
    add("bad_tensor_type", data, 1, f"tensor 'blk.0.attn_q.weight' has unknown type id 99 at offset {m['t0.type']}")
    data, m = one_tensor(typ=31)
    add("bad_tensor_type_removed", data, 1, f"tensor 'blk.0.attn_q.weight' has unknown type id 31 at offset {m['t0.type']}")
    data, m = one_tensor(offset=1 << 40)
    add("bad_tensor_offset_past_end", data, 1,
        f"tensor 'blk.0.attn_q.weight' (info at offset {m['t0']}) has data at offset 1099511627776 of the data section")
    data, m = one_tensor(offset=(1 << 64) - 32)
    add("bad_tensor_offset_wrap", data, 1, "has data at offset 18446744073709551584 of the data section", "running past the end")
    data, m = one_tensor(offset=16)
    add("bad_tensor_misaligned", data, 1,
        f"tensor 'blk.0.attn_q.weight' has data offset 16 at offset {m['t0.offset']}, not a multiple of the alignment 32")
    data, m = one_tensor(ne=(1 << 32, 1 << 32), typ="f32")
    add("bad_tensor_dims_overflow", data, 1,
        f"tensor 'blk.0.attn_q.weight' dimensions overflow a 64-bit element count at ne[1] = 4294967296 (offset {m['t0.ne1']})")
    data, m = one_tensor(ne=(1 << 40, 1 << 20, 1 << 2, 1 << 2), typ="f32")
    add("bad_tensor_dims_overflow4", data, 1, "dimensions overflow a 64-bit element count at ne[3] = 4")
    data, m = one_tensor(ne=(1 << 62,), typ="f32")
    add("bad_tensor_bytes_overflow", data, 1, f"tensor 'blk.0.attn_q.weight' at offset {m['t0']}: size in bytes overflows 64 bits")
    data, m = one_tensor(ne=(32, 0))
    add("bad_tensor_ne_zero", data, 1, f"tensor 'blk.0.attn_q.weight' has ne[1] = 0 at offset {m['t0.ne1']}, expected >= 1")
    data, m = one_tensor(ne=(1 << 63, 1))
    add("bad_tensor_ne_negative", data, 1, f"has ne[0] = -9223372036854775808 at offset {m['t0.ne0']}, expected >= 1")
    data, m = one_tensor(ne=(32, 1, 1, 1, 1))
    add("bad_tensor_ndims5", data, 1, f"tensor 'blk.0.attn_q.weight' has n_dims 5 at offset {m['t0.ndims']}, expected 1 to 4")
    data, m = one_tensor(ne=(), n_dims=0)
    add("bad_tensor_ndims0", data, 1, f"has n_dims 0 at offset {m['t0.ndims']}, expected 1 to 4")
    data, m = one_tensor(ne=(100, 2), typ="q4_K")
    add("bad_tensor_block", data, 1,
        f"tensor 'blk.0.attn_q.weight' (q4_K) has ne[0] = 100 at offset {m['t0.ne0']}, not a multiple of the block size 256")
    data, m = one_tensor(name="x" * 257)
    add("bad_tensor_name_long", data, 1, f"tensor 0 at offset {m['t0']} has a name of 257 bytes, expected at most 256")
    data, m = one_tensor(name="a\0b")
    add("bad_tensor_name_nul", data, 1, f"name of tensor 0 at offset {m['t0']} contains a NUL byte")
    b = padded_builder(0, tensors=0)
    b.tensor("blk.0.ffn_up.weight", [32], "f32").tensor("blk.0.ffn_up.weight", [32], "f32")
    data, m = b.build()
    add("bad_tensor_dup", data, 1,
        f"duplicate tensor name 'blk.0.ffn_up.weight' at offset {m['t1']} (first defined at offset {m['t0']})")
    # known but unsupported type: parses (the model loader refuses it later)
    data, m = one_tensor(typ="q8_K", ne=(256, 1))
    add("good_unsupported_type", data, 0, "blk.0.attn_q.weight q8_K [256, 1]", "not dequantizable (fine)")

    with open(os.path.join(d, "cases.tsv"), "w") as f:
        for c in cases:
            f.write("\t".join(str(x) for x in c) + "\n")
    print(f"wrote {len(cases)} cases to {d}")


def esc(b):
    return "".join(chr(c) if 0x20 <= c < 0x7F and c not in (0x22, 0x5C) else f"\\x{c:02x}" for c in b)


def crosscheck(gguf_py, path, dump_path):
    sys.path.insert(0, gguf_py)
    import numpy as np
    from gguf.gguf_reader import GGUFReader
    from gguf.constants import GGUFValueType as VT
    r = GGUFReader(path)
    lines = open(dump_path, encoding="utf-8", errors="replace").read().splitlines()
    kv_lines = [l for l in lines if l.startswith("kv @")]
    t_lines = [l for l in lines if l.startswith("tensor @")]
    problems = []
    fields = [f for f in r.fields.values() if not f.name.startswith("GGUF.")]
    if len(fields) != len(kv_lines):
        problems.append(f"{len(fields)} KVs in gguf-py, {len(kv_lines)} in gguf_dump")
    for f, line in zip(fields, kv_lines):
        parts = line.split(" ", 4)
        off, key, typ = int(parts[1][1:]), parts[2], parts[3]
        rest = parts[4] if len(parts) > 4 else ""
        if key != f.name or off != f.offset:
            problems.append(f"KV {f.name}@{f.offset} vs {key}@{off}")
            continue
        t0 = f.types[0]
        if t0 == VT.ARRAY:
            # parts: key length, key, value type, element type, count, elements...
            et = VT(int(f.parts[3][0]))
            n = int(f.parts[4][0])
            if typ != f"ARRAY[{et.name}":
                problems.append(f"{key}: type {typ} vs ARRAY[{et.name}")
            if not rest.startswith(f"x {n}]"):
                problems.append(f"{key}: count {rest} vs {n}")
            if et == VT.STRING:
                want = "[" + ", ".join('"' + esc(f.parts[i].tobytes()[:60]) + '"' + ("..." if len(f.parts[i]) > 60 else "")
                                       for i in f.data[:8]) + (", ...]" if n > 8 else "]")
                if rest.split("] ", 1)[1] != want:
                    problems.append(f"{key}: {rest} vs {want}")
            elif et != VT.ARRAY:
                vals = f.contents()[:8]
                got = rest.split("] ", 1)[1].strip("[]").replace(", ...", "")
                gv = [x for x in got.split(", ") if x]
                if len(gv) != len(vals) or any(not same(et, a, b) for a, b in zip(gv, vals)):
                    problems.append(f"{key}: {gv} vs {vals}")
        else:
            if typ != t0.name:
                problems.append(f"{key}: type {typ} vs {t0.name}")
            elif t0 == VT.STRING:
                raw = f.parts[-1].tobytes()
                want = '"' + esc(raw[:200]) + '"' + ("..." if len(raw) > 200 else "")
                if rest != want:
                    problems.append(f"{key}: {rest} vs {want}")
            elif not same(t0, rest, f.contents()):
                problems.append(f"{key}: {rest} vs {f.contents()}")
    if len(r.tensors) != len(t_lines):
        problems.append(f"{len(r.tensors)} tensors in gguf-py, {len(t_lines)} in gguf_dump")
    data_offset = int([l for l in lines if l.startswith("data_offset ")][0].split()[1])
    for t, line in zip(r.tensors, t_lines):
        head, tail = line.split(" [", 1)
        _, off, name, typ = head.split(" ")
        dims, tail = tail.split("] ", 1)
        ne = [int(x) for x in dims.split(", ")]
        toks = tail.split()
        rel, nbytes = int(toks[1]), int(toks[3])
        want = (t.name, t.tensor_type.name.lower(), [int(x) for x in t.shape], int(t.data_offset), int(t.n_bytes))
        have = (name, typ.lower(), ne, data_offset + rel, nbytes)
        if want != have:
            problems.append(f"tensor {want} vs {have}")
    for p in problems:
        print("crosscheck:", p)
    return 1 if problems else 0


def same(t, text, v):
    from gguf.constants import GGUFValueType as VT
    if t == VT.BOOL:
        return text == ("true" if v else "false")
    if t == VT.FLOAT32:
        import numpy as np
        return np.float32(text) == np.float32(v)
    if t == VT.FLOAT64:
        return float(text) == float(v)
    return int(text) == int(v)


def pywriter(gguf_py, path):
    sys.path.insert(0, gguf_py)
    import numpy as np
    import gguf
    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_block_count(2)
    w.add_uint32("qwen3moe.expert_count", 8)
    w.add_float32("qwen3moe.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_bool("test.flag", True)
    w.add_int64("test.i64", -7)
    w.add_float64("test.f64", 2.5)
    w.add_string("general.name", "from gguf-py")
    w.add_array("tokenizer.ggml.tokens", ["hello", "world", "<|im_start|>"])
    w.add_array("test.ints", [1, 2, 3])
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((4, 64)).astype(np.float32))
    w.add_tensor("blk.0.attn_norm.weight", rng.standard_normal(64).astype(np.float16))
    raw = rng.integers(0, 256, size=(3, 144 * 2), dtype=np.uint8)
    w.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    q8 = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "crosscheck":
        sys.exit(crosscheck(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif len(sys.argv) == 4 and sys.argv[1] == "pywriter":
        sys.exit(pywriter(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
