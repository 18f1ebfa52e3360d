#!/usr/bin/env python3
"""Rewrites a GGUF file with edits, to derive bad models from good generated ones.

    patch_gguf.py IN OUT OP [ARGS...] [OP [ARGS...]]...
    patch_gguf.py --list IN
    patch_gguf.py --batch IN SPECFILE   one "OUT OP [ARGS...]..." per line (shell quoting),
                                        all derived from IN, which is read once

Operations (applied in order; the output is re-serialized with fresh tensor
offsets and the file's alignment, so it stays a well-formed GGUF — the damage
is in the model, not in the format):
    set KEY TYPE VALUE       add or replace a scalar KV; TYPE is one of
                             u8 i8 u16 i16 u32 i32 f32 bool str u64 i64 f64
    set-arr KEY TYPE V1,V2.. add or replace an array KV of scalars (TYPE as above)
    del KEY                  remove a KV
    arr-truncate KEY N       keep the first N elements of an array KV
    arr-set KEY I VALUE      replace element I of an array KV (same element type)
    tensor-del NAME          remove a tensor
    tensor-rename OLD NEW    rename a tensor
    tensor-shape NAME D0,D1,..  give a tensor another shape (data resized, zero-filled)
    tensor-type NAME ID      give a tensor another ggml type id (data resized, zero-filled)
    tensor-fill NAME HEX     overwrite a tensor's data with the byte pattern HEX, repeated
                             (e.g. 0000c07f: f32 NaN; 0000807f: f32 +inf; 007e: f16 NaN)
"""
import struct
import sys

T = dict(u8=0, i8=1, u16=2, i16=3, u32=4, i32=5, f32=6, bool=7, str=8, arr=9, u64=10, i64=11, f64=12)
FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}
# ggml type id -> (block size, bytes per block)
GGML = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
        10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
        16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
        22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
        29: (256, 56), 30: (1, 2)}


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)
        self.p += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take("<Q")
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def value(self, t):
        if t == T["str"]:
            return self.string()
        if t == T["arr"]:
            et = self.take("<I")
            n = self.take("<Q")
            return (et, [self.value(et) for _ in range(n)])
        return self.take(FMT[t])


def enc_value(t, v):
    if t == T["str"]:
        v = v.encode() if isinstance(v, str) else v
        return struct.pack("<Q", len(v)) + v
    if t == T["arr"]:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(enc_value(et, x) for x in items)
    return struct.pack(FMT[t], v)


def nbytes(ttype, ne):
    bs, bb = GGML.get(ttype, (1, 1))
    n = 1
    for d in ne[1:]:
        n *= d
    return (ne[0] + bs - 1) // bs * bb * n


def load(path):
    b = open(path, "rb").read()
    r = Reader(b)
    assert r.take("<I") == 0x46554747, "not a GGUF file"
    ver = r.take("<I")
    n_t, n_kv = r.take("<Q"), r.take("<Q")
    kvs = []
    for _ in range(n_kv):
        k = r.string().decode()
        t = r.take("<I")
        kvs.append([k, t, r.value(t)])
    infos = []
    for _ in range(n_t):
        name = r.string().decode()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        tt = r.take("<I")
        off = r.take("<Q")
        infos.append([name, ne, tt, off])
    align = next((v for k, t, v in kvs if k == "general.alignment"), 32)
    data_off = (r.p + align - 1) // align * align
    tensors = []
    for name, ne, tt, off in infos:
        n = nbytes(tt, ne)
        tensors.append([name, ne, tt, bytearray(b[data_off + off:data_off + off + n])])
    return ver, kvs, tensors


def save(path, ver, kvs, tensors):
    align = next((v for k, t, v in kvs if k == "general.alignment"), 32)
    out = bytearray(struct.pack("<IIQQ", 0x46554747, ver, len(tensors), len(kvs)))
    for k, t, v in kvs:
        out += enc_value(T["str"], k) + struct.pack("<I", t) + enc_value(t, v)
    off = 0
    offs = []
    for name, ne, tt, data in tensors:
        offs.append(off)
        off = (off + len(data) + align - 1) // align * align
    for (name, ne, tt, data), o in zip(tensors, offs):
        out += enc_value(T["str"], name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", tt, o)
    out += b"\0" * ((-len(out)) % align)
    for j, (name, ne, tt, data) in enumerate(tensors):
        if j:
            out += b"\0" * ((-len(out)) % align)
        out += data
    with open(path, "wb") as f:
        f.write(out)


def scalar(tname, s):
    t = T[tname]
    if t == T["str"]:
        return t, s.encode()
    if t in (T["f32"], T["f64"]):
        return t, float(s)
    return t, int(s, 0)


def main(argv):
    if len(argv) == 3 and argv[1] == "--list":
        ver, kvs, tensors = load(argv[2])
        for k, t, v in kvs:
            if t == T["arr"]:
                print(f"kv {k} array[{v[0]}] x {len(v[1])}")
            else:
                print(f"kv {k} {t} {v[:80] if isinstance(v, bytes) else v}")
        for name, ne, tt, data in tensors:
            print(f"tensor {name} {ne} type {tt} {len(data)} bytes")
        return 0
    if len(argv) == 4 and argv[1] == "--batch":
        import copy
        import shlex
        base = load(argv[2])
        for line in open(argv[3]):
            words = shlex.split(line)
            if words:
                rc = patch(copy.deepcopy(base), words[0], words[1:])
                if rc:
                    return rc
        return 0
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    return patch(load(argv[1]), argv[2], argv[3:])


def patch(model, out_path, a):
    ver, kvs, tensors = model
    kv = {k: i for i, (k, t, v) in enumerate(kvs)}
    tn = lambda name: next(i for i, x in enumerate(tensors) if x[0] == name)
    i = 0
    while i < len(a):
        op = a[i]
        if op == "set":
            k, (t, v) = a[i + 1], scalar(a[i + 2], a[i + 3])
            if k in kv:
                kvs[kv[k]][1:] = [t, v]
            else:
                kv[k] = len(kvs)
                kvs.append([k, t, v])
            i += 4
        elif op == "set-arr":
            k, et = a[i + 1], T[a[i + 2]]
            items = [scalar(a[i + 2], s)[1] for s in a[i + 3].split(",")] if a[i + 3] else []
            if k in kv:
                kvs[kv[k]][1:] = [T["arr"], (et, items)]
            else:
                kv[k] = len(kvs)
                kvs.append([k, T["arr"], (et, items)])
            i += 4
        elif op == "del":
            kvs = [x for x in kvs if x[0] != a[i + 1]]
            kv = {k: j for j, (k, t, v) in enumerate(kvs)}
            i += 2
        elif op == "arr-truncate":
            k, n = a[i + 1], int(a[i + 2])
            et, items = kvs[kv[k]][2]
            kvs[kv[k]][2] = (et, items[:n])
            i += 3
        elif op == "arr-set":
            k, j, s = a[i + 1], int(a[i + 2]), a[i + 3]
            et, items = kvs[kv[k]][2]
            name = next(n for n, t in T.items() if t == et)
            items[j] = scalar(name, s)[1]
            i += 4
        elif op == "tensor-del":
            tensors.pop(tn(a[i + 1]))
            i += 2
        elif op == "tensor-rename":
            tensors[tn(a[i + 1])][0] = a[i + 2]
            i += 3
        elif op in ("tensor-shape", "tensor-type"):
            x = tensors[tn(a[i + 1])]
            if op == "tensor-shape":
                x[1] = [int(d) for d in a[i + 2].split(",")]
            else:
                x[2] = int(a[i + 2])
            n = nbytes(x[2], x[1])
            x[3] = x[3][:n] + bytearray(max(0, n - len(x[3])))
            i += 3
        elif op == "tensor-fill":
            x = tensors[tn(a[i + 1])]
            pat = bytes.fromhex(a[i + 2])
            n = len(x[3])
            x[3] = bytearray((pat * (n // len(pat) + 1))[:n])
            i += 3
        else:
            print(f"patch_gguf: unknown operation '{op}'", file=sys.stderr)
            return 2
    save(out_path, ver, kvs, tensors)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
