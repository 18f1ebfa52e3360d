#!/usr/bin/env bash
# Tests of the synthetic-model generator (tests/gen_model.c, tests/gen_models.sh):
# files parse, tensors / shapes / types / metadata follow the options (including the
# Q4_K_M layer rules on 48 layers), the vocabularies are consistent, bad options exit 2,
# output is byte-identical for a seed whatever the thread count, and llama.cpp
# (node-llama-cpp) loads and runs a tiny-vocabulary and a real-vocabulary file.
source "$(dirname "$0")/lib.sh"
GEN=build/gen_model
DUMP=build/gguf_dump

bash tests/gen_models.sh >"$TMP/genout" 2>"$TMP/generr"
check "gen_models.sh builds the standard models" test $? = 0
[ -x "$GEN" ] || { fail "build/gen_model exists"; exit 1; }
check "gen_models.sh is a no-op when everything is up to date" \
    bash -c 'bash tests/gen_models.sh 2>&1 >/dev/null | grep -q generated; test $? = 1'

# ---- a small GGUF parser (stdlib only) that prints a JSON summary of a file
cat > "$TMP/gg.py" <<'EOF'
import json, struct, sys
def parse(path):
    d = open(path, "rb").read()
    pos = 0
    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, d, pos); pos += struct.calcsize("<" + fmt); return v[0]
    def rs():
        nonlocal pos
        n = rd("Q"); s = d[pos:pos + n]; pos += n; return s.decode("utf-8")
    F = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    def val(t):
        if t == 8: return rs()
        if t == 9:
            et = rd("I"); n = rd("Q"); return {"elem": et, "v": [val(et) for _ in range(n)]}
        return rd(F[t])
    assert d[:4] == b"GGUF"; pos = 4
    ver = rd("I"); nt = rd("Q"); nk = rd("Q")
    kv, kvt = {}, {}
    for _ in range(nk):
        k = rs(); t = rd("I"); kv[k] = val(t); kvt[k] = t
    ts = []
    for _ in range(nt):
        name = rs(); nd = rd("I"); ne = [rd("Q") for _ in range(nd)]; ty = rd("I"); off = rd("Q")
        ts.append({"name": name, "ne": ne, "type": ty, "off": off})
    al = kv.get("general.alignment", 32)
    data_off = (pos + al - 1) // al * al
    return {"version": ver, "kv": kv, "kvt": kvt, "tensors": ts, "data_off": data_off, "size": len(d), "raw": d}
if __name__ == "__main__":
    g = parse(sys.argv[1]); g.pop("raw")
    json.dump(g, sys.stdout)
EOF
PY() { python3 - "$@"; }   # python3 - ARGS... <<'EOF' script EOF
# okfile NAME: ok if the script printed just "ok", else not ok and its output
okfile() { if grep -qx ok "$TMP/o"; then ok "$1"; else fail "$1"; head -20 "$TMP/o"; fi; }

# ---- every standard model parses with gguf.h's reader (gguf_dump) or the Python parser
bad=""
for f in build/models/*.gguf; do
    if [ -x "$DUMP" ]; then "$DUMP" "$f" >/dev/null 2>&1 || bad="$bad $f"
    else python3 "$TMP/gg.py" "$f" >/dev/null 2>&1 || bad="$bad $f"; fi
done
check "every build/models/*.gguf parses ($( [ -x "$DUMP" ] && echo gguf_dump || echo python))${bad:+: bad$bad}" test -z "$bad"

# ---- tiny-f32: tensor list, shapes, types, metadata keys and their GGUF types
PY "$TMP/gg.py" build/models/tiny-f32.gguf build/models/tiny-tied-f32.gguf >"$TMP/o" 2>&1 <<'EOF'
import sys; sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0]); from gg import parse
g = parse(sys.argv[2]); kv, kvt = g["kv"], g["kvt"]
E, H, HKV, D, X, FF, V = 256, 4, 2, 128, 8, 256, len(kv["tokenizer.ggml.tokens"]["v"])
want = [("token_embd.weight", [E, V])]
for i in range(2):
    b = f"blk.{i}."
    want += [(b + "attn_norm.weight", [E]), (b + "attn_q.weight", [E, H * D]), (b + "attn_k.weight", [E, HKV * D]),
             (b + "attn_v.weight", [E, HKV * D]), (b + "attn_output.weight", [H * D, E]),
             (b + "attn_q_norm.weight", [D]), (b + "attn_k_norm.weight", [D]), (b + "ffn_norm.weight", [E]),
             (b + "ffn_gate_inp.weight", [E, X]), (b + "ffn_gate_exps.weight", [E, FF, X]),
             (b + "ffn_up_exps.weight", [E, FF, X]), (b + "ffn_down_exps.weight", [FF, E, X])]
want += [("output_norm.weight", [E]), ("output.weight", [E, V])]
got = [(t["name"], t["ne"]) for t in g["tensors"]]
assert got == want, f"tensors differ:\n{got}\nwant\n{want}"
assert all(t["type"] == 0 for t in g["tensors"])
assert g["version"] == 3 and "general.alignment" not in kv
off = 0
for t in g["tensors"]:
    assert t["off"] % 32 == 0 and t["off"] >= off, t
    n = 1
    for x in t["ne"]: n *= x
    off = t["off"] + 4 * n
assert g["data_off"] + off == g["size"], (g["data_off"], off, g["size"])
U32, F32, STR, ARR, BOOL = 4, 6, 8, 9, 7
exp = {"general.architecture": (STR, "qwen3moe"), "general.file_type": (U32, 0), "general.quantization_version": (U32, 2),
       "qwen3moe.block_count": (U32, 2), "qwen3moe.context_length": (U32, 4096), "qwen3moe.embedding_length": (U32, E),
       "qwen3moe.feed_forward_length": (U32, 3 * E), "qwen3moe.attention.head_count": (U32, H),
       "qwen3moe.attention.head_count_kv": (U32, HKV), "qwen3moe.rope.freq_base": (F32, 1e6),
       "qwen3moe.expert_used_count": (U32, 2), "qwen3moe.expert_count": (U32, X),
       "qwen3moe.attention.key_length": (U32, D), "qwen3moe.attention.value_length": (U32, D),
       "qwen3moe.expert_feed_forward_length": (U32, FF), "tokenizer.ggml.model": (STR, "gpt2"),
       "tokenizer.ggml.pre": (STR, "qwen2"), "tokenizer.ggml.add_bos_token": (BOOL, False),
       "general.name": (STR, None), "qwen3moe.attention.layer_norm_rms_epsilon": (F32, None),
       "tokenizer.ggml.tokens": (ARR, None), "tokenizer.ggml.token_type": (ARR, None),
       "tokenizer.ggml.merges": (ARR, None), "tokenizer.ggml.eos_token_id": (U32, None),
       "tokenizer.ggml.padding_token_id": (U32, None), "tokenizer.ggml.bos_token_id": (U32, None),
       "tokenizer.chat_template": (STR, None)}
for k, (t, v) in exp.items():
    assert k in kv, f"missing {k}"
    assert kvt[k] == t, f"{k}: type {kvt[k]} want {t}"
    assert v is None or kv[k] == v, f"{k} = {kv[k]} want {v}"
assert abs(kv["qwen3moe.attention.layer_norm_rms_epsilon"] - 1e-6) < 1e-12
assert set(kv) == set(exp), set(kv) ^ set(exp)
assert kv["tokenizer.ggml.token_type"]["elem"] == 5   # INT32, as llama.cpp writes it
g2 = parse(sys.argv[3])
names = [t["name"] for t in g2["tensors"]]
assert "output.weight" not in names and len(names) == len(want) - 1
print("ok")
EOF
okfile "tiny-f32: tensors, shapes, order, offsets and metadata as llama.cpp writes them; --tied drops output.weight"

# ---- value spread in the F32 file: norms near 1, matrices ~1/sqrt(fan_in), router and head gains
PY "$TMP/gg.py" build/models/tiny-f32.gguf >"$TMP/o" 2>&1 <<'EOF'
import sys, math, array; sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0]); from gg import parse
g = parse(sys.argv[2]); d = g["raw"]
def vals(name):
    t = next(t for t in g["tensors"] if t["name"] == name); n = 1
    for x in t["ne"]: n *= x
    a = array.array("f"); a.frombytes(d[g["data_off"] + t["off"]: g["data_off"] + t["off"] + 4 * n]); return a
def ms(a):
    m = sum(a) / len(a); return m, math.sqrt(sum((x - m) ** 2 for x in a) / len(a))
def near(x, want, tol): assert abs(x - want) <= tol * want, (x, want)
m, s = ms(vals("blk.0.attn_norm.weight")); assert abs(m - 1) < 0.03 and 0.07 < s < 0.13, (m, s)
m, s = ms(vals("blk.1.attn_q_norm.weight")); assert abs(m - 1) < 0.05 and 0.06 < s < 0.14, (m, s)
near(ms(vals("blk.0.attn_q.weight"))[1], 1 / 16, 0.05)
near(ms(vals("blk.0.attn_output.weight"))[1], 1 / math.sqrt(512), 0.05)
near(ms(vals("blk.1.ffn_down_exps.weight"))[1], 1 / 16, 0.05)
near(ms(vals("blk.0.ffn_gate_inp.weight"))[1], 2 / 16, 0.1)      # --router-gain 2
near(ms(vals("output.weight"))[1], 4 / 16, 0.05)                 # --output-gain 4
near(ms(vals("token_embd.weight"))[1], 1.0, 0.05)
assert all(math.isfinite(x) for x in vals("output.weight"))
print("ok")
EOF
okfile "tiny-f32 values: norms 1+-0.1, matrices 1/sqrt(fan_in), router gain 2, output gain 4"

# ---- types: every tiny-<T> has its matrices in T, norms and routers in F32; the mixes
PY "$TMP/gg.py" >"$TMP/o" 2>&1 <<'EOF'
import sys; sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0]); from gg import parse
T = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q2_k": 10, "q3_k": 11,
     "q4_k": 12, "q5_k": 13, "q6_k": 14, "iq4_nl": 20, "iq4_xs": 23}
FT = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k": 12,
      "q4_k": 14, "q5_k": 16, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30}
small = lambda n: n.endswith("norm.weight") or "ffn_gate_inp" in n
errs = []
for name, ty in T.items():
    g = parse(f"build/models/tiny-{name}.gguf")
    for t in g["tensors"]:
        w = 0 if small(t["name"]) else ty
        if t["type"] != w: errs.append(f"tiny-{name}: {t['name']} type {t['type']} want {w}")
    if g["kv"]["general.file_type"] != FT[name]: errs.append(f"tiny-{name}: file_type {g['kv']['general.file_type']}")
for f, rule, ft in (("tiny-q8_0m", lambda n: 8, 7), ("tiny-q4_0m", lambda n: 14 if n == "output.weight" else 2, 2)):
    g = parse(f"build/models/{f}.gguf")
    for t in g["tensors"]:
        w = 0 if small(t["name"]) else rule(t["name"])
        if t["type"] != w: errs.append(f"{f}: {t['name']} type {t['type']} want {w}")
    if g["kv"]["general.file_type"] != ft: errs.append(f"{f}: file_type")
print("\n".join(errs) or "ok")
EOF
okfile "tiny-<type> for all 15 types, --mix q8_0 and --mix q4_0: per-tensor types and file_type"

# ---- --mix q4_k_m on 48 layers: llama.cpp's use_more_bits rule for attn_v and ffn_down_exps
run "$GEN" -q -o "$TMP/m48.gguf" --layers 48 --embd 256 --heads 2 --heads-kv 1 --head-dim 128 --experts 2 \
    --experts-used 1 --ff 256 --mix q4_k_m --threads 2
check "48-layer --mix q4_k_m model generated" test $RC = 0
PY "$TMP/gg.py" "$TMP/m48.gguf" >"$TMP/o" 2>&1 <<'EOF'
import sys; sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0]); from gg import parse
g = parse(sys.argv[2]); n = 48
more = lambda i: i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2
errs = []
for t in g["tensors"]:
    nm = t["name"]
    if nm.endswith("norm.weight") or "ffn_gate_inp" in nm: w = 0
    elif nm == "output.weight": w = 14
    elif nm.endswith("attn_v.weight") or nm.endswith("ffn_down_exps.weight"): w = 14 if more(int(nm.split(".")[1])) else 12
    else: w = 12
    if t["type"] != w: errs.append(f"{nm}: {t['type']} want {w}")
q6 = sorted({int(t["name"].split(".")[1]) for t in g["tensors"] if t["name"].endswith("attn_v.weight") and t["type"] == 14})
assert len(q6) == 24 and q6[:8] == [0, 1, 2, 3, 4, 5, 8, 11], q6
assert g["kv"]["general.file_type"] == 15
assert len(g["tensors"]) == 3 + 12 * 48
print("\n".join(errs) or "ok")
EOF
okfile "--mix q4_k_m: Q6_K attn_v/ffn_down_exps on layers 0-5, 8, 11, ..., 41-47 (24 of 48), Q4_K elsewhere, output Q6_K"

# ---- --tensor-type overrides (first match wins), fallback for rows that are not whole blocks
run "$GEN" -q -o "$TMP/ov.gguf" --type q4_k --tensor-type 'ffn_down_exps=q8_0' --tensor-type 'blk\.1\.attn_(q|k)\.=f16' \
    --tensor-type 'attn_q=bf16' --tensor-type 'ffn_gate_inp=f16' --threads 2
run2=$RC
run "$GEN" -o "$TMP/fb.gguf" --preset micro --type q4_k --tensor-type attn_q=q2_k --tensor-type attn_k=q6_k --threads 2
PY "$TMP/gg.py" "$TMP/ov.gguf" "$TMP/fb.gguf" >"$TMP/o" 2>&1 <<'EOF'
import sys; sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0]); from gg import parse
ty = lambda g, n: next(t["type"] for t in g["tensors"] if t["name"] == n)
g = parse(sys.argv[2])
assert ty(g, "blk.0.ffn_down_exps.weight") == 8 and ty(g, "blk.1.ffn_down_exps.weight") == 8
assert ty(g, "blk.1.attn_q.weight") == 1 and ty(g, "blk.1.attn_k.weight") == 1   # first match wins
assert ty(g, "blk.0.attn_q.weight") == 30 and ty(g, "blk.0.attn_k.weight") == 12
assert ty(g, "blk.0.ffn_gate_inp.weight") == 1 and ty(g, "blk.0.ffn_up_exps.weight") == 12
g = parse(sys.argv[3])   # micro: rows of 64 and 32 elements cannot hold 256-element k-quant blocks
assert ty(g, "blk.0.ffn_up_exps.weight") == 6, "q4_k -> q5_0"
assert ty(g, "blk.0.attn_q.weight") == 20, "q2_k -> iq4_nl"
assert ty(g, "blk.0.attn_k.weight") == 8, "q6_k -> q8_0"
print("ok")
EOF
grep -q 'using q5_0' "$TMP/err" || echo "no fallback note on stderr" >> "$TMP/o"
[ "$run2" = 0 ] || echo "gen_model with --tensor-type exited $run2" >> "$TMP/o"
okfile "--tensor-type (regex or substring, first match wins) and llama.cpp's k-quant fallback on narrow rows (noted on stderr)"

# ---- per-layer ff array, GGUF v2, alignment 64
PY "$TMP/gg.py" >"$TMP/o" 2>&1 <<'EOF'
import sys; sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0]); from gg import parse
g = parse("build/models/tiny-ffarr-f32.gguf")
a = g["kv"]["qwen3moe.expert_feed_forward_length"]
assert a == {"elem": 5, "v": [256, 512]}, a
ne = {t["name"]: t["ne"] for t in g["tensors"]}
assert ne["blk.0.ffn_up_exps.weight"] == [256, 256, 8] and ne["blk.1.ffn_gate_exps.weight"] == [256, 512, 8]
assert ne["blk.1.ffn_down_exps.weight"] == [512, 256, 8]
g = parse("build/models/tiny-v2-q8_0.gguf"); assert g["version"] == 2
g = parse("build/models/tiny-align64-q4_k.gguf")
assert g["kv"]["general.alignment"] == 64 and g["kvt"]["general.alignment"] == 4
assert g["data_off"] % 64 == 0 and all(t["off"] % 64 == 0 for t in g["tensors"])
print("ok")
EOF
okfile "--ff 256,512 writes an INT32 array and per-layer shapes; --version 2; --alignment 64"

# ---- the tiny vocabulary: byte tokens, consistent merges, specials, template
PY "$TMP/gg.py" >"$TMP/o" 2>&1 <<'EOF'
import sys; sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0]); from gg import parse
g = parse("build/models/tiny-f32.gguf"); kv = g["kv"]
tok = kv["tokenizer.ggml.tokens"]["v"]; tt = kv["tokenizer.ggml.token_type"]["v"]; mg = kv["tokenizer.ggml.merges"]["v"]
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs = bs[:] + [256 + i for i in range(256 - len(bs))]
bs += [b for b in range(256) if b not in bs]
assert tok[:256] == [chr(c) for c in cs], "byte tokens in GPT-2 order"
ids = {t: i for i, t in enumerate(tok)}
assert len(ids) == len(tok), "duplicate tokens"
assert 200 <= len(mg) <= 1000, len(mg)
for i, m in enumerate(mg):
    a, b = m.split(" ")
    assert a in ids and b in ids and a + b in ids, m
    assert ids[a + b] == 256 + i, (m, ids[a + b])
for w in ["Ġthe", "Ġand", "Ġof", "Ġto", "ĠThe", "Ġis", "Ġworld", "Hello", "ĠĠĠ", "Ċ"]:
    assert w in ids, w
sp = {"<|endoftext|>": 3, "<|im_start|>": 3, "<|im_end|>": 3, "<think>": 4, "</think>": 4}
for s, t in sp.items(): assert tt[ids[s]] == t, s
assert all(t == 1 for i, t in enumerate(tt) if tok[i] not in sp)
assert kv["tokenizer.ggml.eos_token_id"] == ids["<|im_end|>"]
assert kv["tokenizer.ggml.bos_token_id"] == kv["tokenizer.ggml.padding_token_id"] == ids["<|endoftext|>"]
assert "<|im_start|>" in kv["tokenizer.chat_template"] and "add_generation_prompt" in kv["tokenizer.chat_template"]
assert g["tensors"][0]["ne"] == [256, len(tok)]
print("ok")
EOF
okfile "tiny vocabulary: 256 GPT-2 byte tokens, every merge result a token, specials CONTROL/USER_DEFINED, eos/bos ids"

# ---- the real vocabulary layout (llama.cpp's converter: added tokens, [PADn] UNUSED up to 151936)
if [ -f build/models/real-q8_0.gguf ]; then
    PY "$TMP/gg.py" >"$TMP/o" 2>&1 <<'EOF'
import sys; sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0]); from gg import parse
g = parse("build/models/real-q8_0.gguf"); kv = g["kv"]
tok = kv["tokenizer.ggml.tokens"]["v"]; tt = kv["tokenizer.ggml.token_type"]["v"]
assert len(tok) == 151936 and g["tensors"][0]["ne"] == [256, 151936]
assert len(kv["tokenizer.ggml.merges"]["v"]) == 151387
assert tok[151643] == "<|endoftext|>" and tok[151644] == "<|im_start|>" and tok[151645] == "<|im_end|>"
assert tok[151667] == "<think>" and tok[151668] == "</think>" and tt[151667] == 4 and tt[151644] == 3
assert tok[151657] == "<tool_call>" and tt[151657] == 4 and tt[151659] == 3   # <|fim_prefix|> looks special
assert tok[151669] == "[PAD151669]" and tok[-1] == "[PAD151935]" and all(t == 5 for t in tt[151669:])
assert all(t == 1 for t in tt[:151643]) and tok[9707] == "Hello"
assert kv["tokenizer.ggml.eos_token_id"] == 151645 and kv["tokenizer.ggml.bos_token_id"] == 151643
assert kv["tokenizer.ggml.padding_token_id"] == 151643 and "enable_thinking" in kv["tokenizer.chat_template"]
print("ok")
EOF
    okfile "real vocabulary: 151936 tokens, added tokens at 151643.., [PADn] UNUSED, eos 151645, Qwen3 template"
else
    ok "real vocabulary layout # SKIP no build/models/real-q8_0.gguf (needs node + tests/node_modules)"
fi

# ---- bad options: exit 2 with a message
badopt() {
    local what=$1 pat=$2; shift 2
    run "$GEN" -q "$@"
    check "bad usage exits 2 with a message: $what" bash -c "test $RC = 2 && grep -q -- '$pat' $TMP/err && test ! -s $TMP/out"
}
badopt "no -o" "missing -o" --layers 2
badopt "unknown option" "unknown option" -o "$TMP/x.gguf" --frobnicate 3
badopt "missing value" "needs a value" -o "$TMP/x.gguf" --layers
badopt "non-integer" "not an integer" -o "$TMP/x.gguf" --embd 12x
badopt "zero layers" "out of range" -o "$TMP/x.gguf" --layers 0
badopt "unknown type" "unknown or unsupported type" -o "$TMP/x.gguf" --type q9_9
badopt "unsupported type" "unknown or unsupported type" -o "$TMP/x.gguf" --type iq2_xxs
badopt "bad mix" "q4_k_m" -o "$TMP/x.gguf" --mix q3_k_s
badopt "--type with --mix" "exclude" -o "$TMP/x.gguf" --type q8_0 --mix q4_0
badopt "heads not a multiple of kv heads" "multiple" -o "$TMP/x.gguf" --heads 3 --heads-kv 2
badopt "odd head_dim" "even" -o "$TMP/x.gguf" --head-dim 33
badopt "experts-used > experts" "exceeds" -o "$TMP/x.gguf" --experts 4 --experts-used 5
badopt "--ff list length" "values given" -o "$TMP/x.gguf" --layers 3 --ff 256,256
badopt "--vocab real without a file" "vocab-file" -o "$TMP/x.gguf" --vocab real
badopt "missing vocab file" "cannot open" -o "$TMP/x.gguf" --vocab real --vocab-file "$TMP/nope.txt"
badopt "alignment not a power of two" "power of two" -o "$TMP/x.gguf" --alignment 48
badopt "--n-vocab below the vocabulary" "smaller than" -o "$TMP/x.gguf" --n-vocab 100
badopt "bad --tensor-type" "PATTERN=TYPE" -o "$TMP/x.gguf" --tensor-type attn_q
badopt "bad --tensor-type regex" "regular expression" -o "$TMP/x.gguf" --tensor-type '(=q8_0'
badopt "version 1" "out of range" -o "$TMP/x.gguf" --version 1
badopt "unknown preset" "unknown preset" -o "$TMP/x.gguf" --preset huge
check "no file left behind by failed runs" bash -c "! ls $TMP/x.gguf* 2>/dev/null | grep -q ."
run "$GEN" --help
check "--help exits 0 and lists the options" bash -c "test $RC = 0 && grep -q -- '--tensor-type' $TMP/out"
run "$GEN" -o /nonexistent-dir/x.gguf
check "unwritable output exits 1 with a message" bash -c "test $RC = 1 && grep -q 'cannot create' $TMP/err"

# ---- determinism: same seed same bytes, whatever the thread count; another seed differs
S="--preset tiny --mix q4_k_m --layers 3 --ff 256,512,256 --n-vocab 600"
"$GEN" -q -o "$TMP/a.gguf" $S --seed 5 --threads 1
"$GEN" -q -o "$TMP/b.gguf" $S --seed 5 --threads 2
"$GEN" -q -o "$TMP/c.gguf" $S --seed 5 --threads 7
"$GEN" -q -o "$TMP/d.gguf" $S --seed 6 --threads 2
check "same seed: identical bytes with 1, 2 and 7 threads" bash -c "cmp -s $TMP/a.gguf $TMP/b.gguf && cmp -s $TMP/a.gguf $TMP/c.gguf"
check "another seed gives other weights (same size)" bash -c "! cmp -s $TMP/a.gguf $TMP/d.gguf && test \$(stat -c %s $TMP/a.gguf) = \$(stat -c %s $TMP/d.gguf)"
check "standard model regenerates to the same bytes" bash -c "'$GEN' -q -o $TMP/t.gguf --preset tiny --seed 1 --type q4_k && cmp -s $TMP/t.gguf build/models/tiny-q4_k.gguf"

# ---- speed on a scaled-down 30b-a3b shape (reported, not checked: CI never times anything)
run "$GEN" -o "$TMP/s.gguf" --preset 30b-a3b --layers 2 --mix q4_k_m
check "30b-a3b shape (2 of 48 layers) generates" test $RC = 0
echo "# $(grep -o '[0-9.]* GiB.*' $TMP/err | sed 's/(.*merges), //')"
rm -f "$TMP/s.gguf"

# ---- llama.cpp loads and runs them (node-llama-cpp)
if [ -d tests/node_modules/node-llama-cpp ] && command -v node >/dev/null; then
    cat > tests/.t_gen_model_$$.mjs <<'EOF'
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
const llama = await getLlama({gpu: false, logLevel: LlamaLogLevel.error, build: "never"});
for (const arg of process.argv.slice(2)) {
    const [path, expect] = arg.split("=");
    try {
        const model = await llama.loadModel({modelPath: path});
        const text = "<|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n";
        const ids = Array.from(model.tokenize(text, true));
        const back = model.detokenize(ids, true);
        const ctx = await model.createContext({contextSize: 128, threads: 2});
        const seq = ctx.getSequence();
        const out = [];
        for await (const t of seq.evaluate(ids, {temperature: 0})) { out.push(t); if (out.length >= 4) break; }
        const okTok = back === text && (!expect || ids.join(",") === expect);
        console.log(`${okTok && out.length > 0 ? "ok" : "not ok"} - llama.cpp loads ${path}, tokenizes the chat prompt` +
            ` (${ids.length} tokens${expect ? ", as the HF tokenizer does" : ""}) and generates ${JSON.stringify(out)}`);
        if (!okTok) console.log(`# ids ${ids.join(",")} back ${JSON.stringify(back)}`);
        await ctx.dispose(); await model.dispose();
    } catch (e) { console.log(`not ok - llama.cpp loads ${path}: ${e.message}`); }
}
EOF
    REALIDS="151644,872,198,9707,1879,151645,198,151644,77091,198"
    models=(build/models/tiny-f32.gguf build/models/tiny-q4_k_m.gguf build/models/tiny-iq4_xs.gguf build/models/tiny-tied-f32.gguf
            build/models/tiny-v2-q8_0.gguf build/models/tiny-align64-q4_k.gguf build/models/micro-q4_0.gguf)
    [ -f build/models/real-q4_k_m.gguf ] && models+=("build/models/real-q4_k_m.gguf=$REALIDS")
    (cd tests && node ".t_gen_model_$$.mjs" "${models[@]/#/../}") 2>"$TMP/nerr" | sed 's#\.\./build#build#'
    rm -f tests/.t_gen_model_$$.mjs
else
    ok "llama.cpp loads the generated files # SKIP node-llama-cpp not installed (make tests/node_modules)"
fi
