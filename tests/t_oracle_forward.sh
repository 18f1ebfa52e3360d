#!/usr/bin/env bash
# Oracle test of the forward pass: ./qwen3moe --dump-logits against llama.cpp (node-llama-cpp),
# teacher forced over 40 random tokens, on synthetic Qwen3-MoE models of two shapes in F32
# (logits equal to ~1e-4) and on every quantized type (cosine / top-1 thresholds measured
# in tests/ORACLE.md). Models are generated into build/oracle/ (kept between runs).
source "$(dirname "$0")/lib.sh"
D=build/oracle
T=${ORACLE_THREADS:-2}
GEN=build/gen_model

if [ ! -d tests/node_modules/node-llama-cpp ]; then
    ok "forward pass equals llama.cpp # SKIP node-llama-cpp not installed (make tests/node_modules)"; exit 0
fi
if [ ! -x "$BIN" ] || [ ! -x "$GEN" ]; then
    fail "forward oracle: $BIN and $GEN must be built first (make)"; exit 1
fi
mkdir -p "$D"

# gen NAME ARGS...: generates $D/NAME.gguf unless it is newer than the generator
gen() {
    local name=$1; shift
    local f="$D/$name.gguf" stamp="$D/$name.args" args="$*"
    if [ -f "$f" ] && [ "$f" -nt "$GEN" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$args" ]; then return 0; fi
    "$GEN" -q -o "$f" --threads "$T" "$@" && printf '%s' "$args" > "$stamp"
}

# shape A: the tiny preset: embd 256, 4 heads of 128 (n_head*head_dim = 512 != embd),
# 2 kv heads (GQA 2:1), 8 experts / 2 used, ff 256, separate output head
A="--seed 11 --preset tiny"
# shape C: shape A with every expert used (4 of 4): no routing choice, so llama.cpp's
# activation rounding cannot flip an expert selection, and the direct comparison of the
# quantized files stays tight
C="--seed 13 --preset tiny --experts 4 --experts-used 4"
# shape B: tied output, 3 layers, 8 heads of 64 over 2 kv heads (GQA 4:1), 16 experts / 4 used
B="--seed 12 --preset tiny --layers 3 --heads 8 --heads-kv 2 --head-dim 64 --experts 16 --experts-used 4 --ff 512 --tied"

TYPES=${ORACLE_TYPES:-"f16 bf16 q8_0 q6_k q5_k q5_0 q5_1 q4_k q4_0 q4_1 iq4_nl iq4_xs q3_k q2_k"}
cases=()
gen a-f32 $A --type f32 || { fail "generate $D/a-f32.gguf"; exit 1; }
gen b-f32 $B --type f32 || { fail "generate $D/b-f32.gguf"; exit 1; }
cases+=("A-f32-gqa-untied:f32:$D/a-f32.gguf" "A-f32-decode:f32:$D/a-f32.gguf:decode"
        "B-f32-tied:f32:$D/b-f32.gguf" "B-f32-tied-decode:f32:$D/b-f32.gguf:decode")
# the real Qwen3 vocabulary (151936 logits a row; 16 positions keep llama.cpp's side fast)
if [ ! -f "$D/qwen3-vocab.txt" ] || [ tests/export_vocab.mjs -nt "$D/qwen3-vocab.txt" ]; then
    node tests/export_vocab.mjs "$D/qwen3-vocab.txt" >/dev/null 2>&1 || { fail "export the Qwen3 vocabulary"; exit 1; }
fi
gen r-f32 --seed 14 --preset micro --tied --vocab real --vocab-file "$D/qwen3-vocab.txt" --type f32 ||
    { fail "generate $D/r-f32.gguf"; exit 1; }
cases+=("R-f32-real-vocab:f32:$D/r-f32.gguf:n=16")
# llama.cpp's own NumPy dequantization (gguf-py) for the exact checks of the quantized path
PY=
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done
GGUF_PY=$(bash tests/dequant_ref_gguf_py.sh 2>/dev/null)
for t in $TYPES; do
    gen "a-$t" $A --type "$t" || { fail "generate $D/a-$t.gguf"; exit 1; }
    gen "c-$t" $C --type "$t" || { fail "generate $D/c-$t.gguf"; exit 1; }
    # direct: llama.cpp on the quantized file (it rounds activations, which flips near-tie
    # expert choices in A: loose thresholds there, tight ones in C)
    cases+=("A-$t:$t:$D/a-$t.gguf:th=routed" "C-$t:$t:$D/c-$t.gguf")
    # exact: llama.cpp on the same weights dequantized to F32 by gguf-py (f32 thresholds)
    if [ -n "$PY" ] && [ -n "$GGUF_PY" ]; then
        deq=$D/a-$t.deq.gguf
        if [ ! -f "$deq" ] || [ "$D/a-$t.gguf" -nt "$deq" ]; then
            "$PY" tests/oracle/dequant_to_f32.py "$GGUF_PY" "$D/a-$t.gguf" "$deq" || { fail "dequantize $D/a-$t.gguf with gguf-py"; continue; }
        fi
        cases+=("A-$t-exact:$t:$D/a-$t.gguf:ref=$deq")
    else
        ok "A-$t-exact: logits equal llama.cpp on gguf-py's F32 dequantization # SKIP ${PY:+no llama.cpp gguf-py}${PY:-no python3 with numpy}"
    fi
done

node tests/oracle/forward_test.mjs "$BIN" "$T" "${cases[@]}"
