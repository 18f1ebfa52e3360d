#!/usr/bin/env bash
# Hostile models and command lines: every bad input gets an "error: ..." message
# naming the problem and the documented exit code, never a crash or a hang.
# The bad models are derived from a good generated one by tests/patch_gguf.py,
# which rewrites a well-formed GGUF: the damage is in the model (architecture,
# keys, hyper-parameters, tensor names/shapes/types, vocabulary), not in the
# format (truncations, bad counts/offsets: tests/t_gguf_reader.sh covers those).
# Also runs the regression inputs under tests/regress/ (crashes found by fuzzing).
source "$(dirname "$0")/lib.sh"
GEN=build/gen_model
[ -x $GEN ] || make -s $GEN >/dev/null 2>&1 || { fail "build $GEN"; exit 1; }
BASE=$TMP/base.gguf
# tiny: embd 256 so that a 256-block type can replace any matrix; 2 layers, 4 experts
$GEN -q -o $BASE --preset tiny --layers 2 --experts 4 --experts-used 2 --ff 32 --heads 4 --heads-kv 2 \
    --head-dim 16 --type q8_0 --threads 1 --seed 3 || { fail "generate the base model"; exit 1; }
# the interpreter itself, not a pyenv shim that costs a second a call
PY=$(python3 -c 'import sys; print(sys.executable)')
PATCH="$PY tests/patch_gguf.py"
# a process killed by a sanitizer or a signal must not pass as a clean refusal
clean_stderr() { ! grep -qE 'Sanitizer|runtime error|Segmentation|Aborted|core dumped' "$TMP/err"; }

run timeout 60 $BIN -m $BASE --cpu -t 1 -p hi -n 1 --temp 0
check "the base model loads and runs (exit 0)" bash -c "[ $RC -eq 0 ]"
$PATCH $BASE $TMP/same.gguf
check "patch_gguf.py with no edit writes the file back byte for byte" cmp -s $BASE $TMP/same.gguf

# bad NAME PATTERN PATCH-OPS...: the patched model is refused with exit 1 and
# a message on stderr containing PATTERN (fixed string), nothing on stdout.
# Cases are queued, then patch_gguf.py writes all the files in one go
# (run_bad_cases) and the binary runs on each.
NAMES=(); PATS=(); : > $TMP/spec
bad() {
    local i=${#NAMES[@]}
    NAMES+=("$1"); PATS+=("$2"); shift 2
    printf '%q ' "$TMP/bad$i.gguf" "$@" >> $TMP/spec; echo >> $TMP/spec
}
run_bad_cases() {
    $PATCH --batch $BASE $TMP/spec 2>$TMP/patch.err || { fail "patch_gguf.py --batch: $(tail -1 $TMP/patch.err)"; return; }
    for i in "${!NAMES[@]}"; do
        local name=${NAMES[$i]} pat=${PATS[$i]}
        run timeout 60 $BIN -m $TMP/bad$i.gguf --cpu -t 1 -p hi -n 1 --temp 0
        if [ $RC -eq 1 ] && grep -q '^error: ' $TMP/err && grep -qF -- "$pat" $TMP/err && [ ! -s $TMP/out ] && clean_stderr; then
            ok "$name → exit 1: $pat"
        else
            fail "$name → expected exit 1 and '$pat'; got exit $RC: $(grep -v '^$' $TMP/err | head -3 | tr '\n' ' ')"
        fi
        rm -f $TMP/bad$i.gguf
    done
}

# --- architecture
bad "architecture llama" "architecture 'llama' is not supported (expected 'qwen3moe')" set general.architecture str llama
bad "architecture qwen3 (dense)" "architecture 'qwen3' is not supported" set general.architecture str qwen3
bad "architecture missing" "missing required key 'general.architecture'" del general.architecture
bad "architecture not a string" "key 'general.architecture': expected a string, found uint32" set general.architecture u32 5

# --- missing required keys
for k in block_count embedding_length attention.head_count expert_count expert_used_count expert_feed_forward_length; do
    bad "key qwen3moe.$k missing" "missing required key 'qwen3moe.$k'" del qwen3moe.$k
done
bad "block_count is a string" "key 'qwen3moe.block_count' at offset" set qwen3moe.block_count str two

# --- missing tensors
bad "token_embd missing" "missing required tensor 'token_embd.weight'" tensor-del token_embd.weight
bad "output_norm missing" "missing required tensor 'output_norm.weight'" tensor-del output_norm.weight
bad "an expert tensor of the last layer missing" "missing required tensor 'blk.1.ffn_down_exps.weight'" tensor-del blk.1.ffn_down_exps.weight
bad "attn_q renamed" "missing required tensor 'blk.0.attn_q.weight'" tensor-rename blk.0.attn_q.weight blk.0.attn_query.weight
bad "q norm missing" "missing required tensor 'blk.1.attn_q_norm.weight'" tensor-del blk.1.attn_q_norm.weight
bad "block_count larger than the layers present" "missing required tensor 'blk.2.attn_norm.weight'" set qwen3moe.block_count u32 3

# --- wrong shapes
bad "attn_q with the wrong row count" "tensor 'blk.0.attn_q.weight' has shape [256, 48, 1, 1], expected [256, 64, 1]" tensor-shape blk.0.attn_q.weight 256,48
bad "attn_k sized for head_count, not head_count_kv" "tensor 'blk.1.attn_k.weight' has shape [256, 64, 1, 1], expected [256, 32, 1]" tensor-shape blk.1.attn_k.weight 256,64
bad "an expert tensor with the wrong expert count" "tensor 'blk.1.ffn_up_exps.weight' has shape [256, 32, 3, 1], expected [256, 32, 4]" tensor-shape blk.1.ffn_up_exps.weight 256,32,3
bad "a 4-D expert tensor" "tensor 'blk.0.ffn_down_exps.weight' has shape [32, 256, 4, 2], expected [32, 256, 4]" tensor-shape blk.0.ffn_down_exps.weight 32,256,4,2
bad "router with the wrong expert count" "tensor 'blk.0.ffn_gate_inp.weight' has shape [256, 4, 1, 1], expected [256, 8, 1]" set qwen3moe.expert_count u32 8
bad "output head with other rows than the embedding" "tensor 'output.weight' has shape [256, 522, 1, 1], expected [256, 523, 1]" tensor-shape output.weight 256,522
bad "embedding_length differs from the tensors" "tensor 'token_embd.weight' has shape [256, 523, 1, 1], expected [128, 523, 1]" set qwen3moe.embedding_length u32 128
bad "per-layer expert FFN width disagrees with the tensors" "tensor 'blk.1.ffn_gate_exps.weight' has shape [256, 32, 4, 1], expected [256, 64, 4]" set-arr qwen3moe.expert_feed_forward_length u32 32,64
bad "key_length disagrees with the tensors" "tensor 'blk.0.attn_q.weight' has shape [256, 64, 1, 1], expected [256, 128, 1]" set qwen3moe.attention.key_length u32 32 set qwen3moe.attention.value_length u32 32

# --- tensor types we do not compute with
bad "IQ2_XXS (id 16) tensor" "tensor 'blk.0.attn_norm.weight' has type iq2_xxs (id 16), which qwen3moe does not support" tensor-type blk.0.attn_norm.weight 16
bad "IQ2_XXS expert tensor" "tensor 'blk.1.ffn_gate_exps.weight' has type iq2_xxs (id 16)" tensor-type blk.1.ffn_gate_exps.weight 16
bad "Q8_K (id 15) tensor" "has type q8_K (id 15), which qwen3moe does not support" tensor-type blk.0.attn_q.weight 15
bad "I32 (id 26) tensor" "tensor 'output_norm.weight' has type i32 (id 26)" tensor-type output_norm.weight 26
bad "F64 (id 28) tensor" "has type f64 (id 28)" tensor-type token_embd.weight 28

# --- impossible hyper-parameters
bad "zero heads" "key 'qwen3moe.attention.head_count' is 0, expected a value in [1, 4096]" set qwen3moe.attention.head_count u32 0
bad "negative heads" "key 'qwen3moe.attention.head_count' is -4" set qwen3moe.attention.head_count i32 -4
bad "zero kv heads" "key 'qwen3moe.attention.head_count_kv' is 0" set qwen3moe.attention.head_count_kv u32 0
bad "head_count_kv does not divide head_count" "attention.head_count_kv (3) must divide attention.head_count (4)" set qwen3moe.attention.head_count_kv u32 3
bad "more experts used than exist" "expert_used_count (5) is larger than expert_count (4)" set qwen3moe.expert_used_count u32 5
bad "zero experts used" "key 'qwen3moe.expert_used_count' is 0" set qwen3moe.expert_used_count u32 0
bad "zero experts" "key 'qwen3moe.expert_count' is 0" set qwen3moe.expert_count u32 0
bad "odd key_length" "attention.key_length is 15, expected an even number" set qwen3moe.attention.key_length u32 15 set qwen3moe.attention.value_length u32 15
bad "value_length differs from key_length" "attention.value_length (32) differs from attention.key_length (16)" set qwen3moe.attention.value_length u32 32
bad "zero layers" "key 'qwen3moe.block_count' is 0" set qwen3moe.block_count u32 0
bad "4294967295 layers" "key 'qwen3moe.block_count' is 4294967295" set qwen3moe.block_count u32 4294967295
bad "zero embedding" "key 'qwen3moe.embedding_length' is 0" set qwen3moe.embedding_length u32 0
bad "zero context length" "key 'qwen3moe.context_length' is 0" set qwen3moe.context_length u32 0
bad "context length beyond int32" "key 'qwen3moe.context_length' is 99999999999" set qwen3moe.context_length u64 99999999999
bad "rms epsilon NaN" "key 'qwen3moe.attention.layer_norm_rms_epsilon' is nan" set qwen3moe.attention.layer_norm_rms_epsilon f32 nan
bad "rms epsilon negative" "key 'qwen3moe.attention.layer_norm_rms_epsilon' is -1" set qwen3moe.attention.layer_norm_rms_epsilon f32 -1
bad "rope base zero" "key 'qwen3moe.rope.freq_base' is 0" set qwen3moe.rope.freq_base f32 0
bad "rope base infinite" "key 'qwen3moe.rope.freq_base' is inf" set qwen3moe.rope.freq_base f64 inf
bad "expert FFN width array too short" "key 'qwen3moe.expert_feed_forward_length' has 1 entries, expected one per layer (2)" set-arr qwen3moe.expert_feed_forward_length u32 32
bad "expert FFN width zero in one layer" "expert_feed_forward_length[1] is 0" set-arr qwen3moe.expert_feed_forward_length u32 32,0
bad "expert FFN width array of strings" "expected an array of integers, found an array of string" set-arr qwen3moe.expert_feed_forward_length str 32,32

# --- vocabulary and tokenizer
bad "vocabulary smaller than the embedding" "the vocabulary has 522 tokens but token_embd.weight has 523 rows" arr-truncate tokenizer.ggml.tokens 522
bad "token_type of another length" "key 'tokenizer.ggml.token_type': expected an integer array of 523 entries" arr-truncate tokenizer.ggml.token_type 500
bad "token_type of floats" "key 'tokenizer.ggml.token_type': expected an integer array" set-arr tokenizer.ggml.token_type f32 "$(python3 -c 'print(",".join(["1"]*523))')"
bad "tokens not strings" "key 'tokenizer.ggml.tokens': expected an array of strings" set-arr tokenizer.ggml.tokens u32 1,2
bad "tokens missing" "missing required key 'tokenizer.ggml.tokens'" del tokenizer.ggml.tokens
bad "eos id out of range" "tokenizer.ggml.eos_token_id is 523, outside the vocabulary of 523 tokens" set tokenizer.ggml.eos_token_id u32 523
bad "eos id negative" "key 'tokenizer.ggml.eos_token_id' is -2" set tokenizer.ggml.eos_token_id i32 -2
bad "eos id a string" "key 'tokenizer.ggml.eos_token_id' at offset" set tokenizer.ggml.eos_token_id str 1
bad "bos id out of range" "tokenizer.ggml.bos_token_id is 100000, outside the vocabulary" set tokenizer.ggml.bos_token_id u32 100000
bad "padding id out of range" "tokenizer.ggml.padding_token_id is 523, outside the vocabulary" set tokenizer.ggml.padding_token_id u32 523
bad "padding id 2^64-1" "key 'tokenizer.ggml.padding_token_id' is" set tokenizer.ggml.padding_token_id u64 18446744073709551615
bad "tokenizer model llama (SentencePiece)" "tokenizer.ggml.model must be 'gpt2' (byte-level BPE), found 'llama'" set tokenizer.ggml.model str llama
bad "tokenizer model not a string" "tokenizer.ggml.model must be 'gpt2'" set tokenizer.ggml.model u32 1
bad "tokenizer model missing" "missing required key 'tokenizer.ggml.model'" del tokenizer.ggml.model
bad "a merge without a space" "merge 0 is not of the form 'left right'" arr-set tokenizer.ggml.merges 0 nospace
bad "merges not strings" "key 'tokenizer.ggml.merges': expected an array of strings" set-arr tokenizer.ggml.merges u32 1,2
bad "a 2000-byte token" "token 5 is 2000 bytes long, expected at most 1024" arr-set tokenizer.ggml.tokens 5 "$(printf 'a%.0s' $(seq 2000))"

run_bad_cases

# a vocabulary without the ChatML tokens: refused for chat, fine with --raw
$PATCH $BASE $TMP/nochat.gguf arr-set tokenizer.ggml.tokens 519 '<|imstart|>'
run timeout 60 $BIN -m $TMP/nochat.gguf --cpu -t 1 -p hi -n 1 --temp 0
check "no <|im_start|> in the vocabulary: chat refused (exit 1, 'use --raw')" bash -c "[ $RC -eq 1 ] && grep -q 'im_start' $TMP/err && grep -q -- '--raw' $TMP/err"
run timeout 60 $BIN -m $TMP/nochat.gguf --cpu -t 1 -p hi -n 1 --temp 0 --raw
check "... and --raw works with it (exit 0)" test $RC -eq 0
$PATCH $BASE $TMP/pre.gguf set tokenizer.ggml.pre str llama-bpe
run timeout 60 $BIN -m $TMP/pre.gguf --cpu -t 1 -p hi -n 1 --temp 0
check "another tokenizer.ggml.pre: a warning, exit 0" bash -c "[ $RC -eq 0 ] && grep -q 'warning: .*tokenizer.ggml.pre' $TMP/err"

# --- weights that are NaN / inf: garbage out, but no crash and a defined exit code
for spec in "blk.0.ffn_gate_inp.weight 0000c07f router-NaN" "output.weight 00fc output-head-f16-minus-inf" "blk.1.attn_norm.weight 0000807f norm-inf"; do
    set -- $spec
    $PATCH $BASE $TMP/nan.gguf tensor-fill $1 $2
    for mode in "--temp 0" "--temp 0.8 --top-k 0 --top-p 0.9 --min-p 0.1 -s 1" "--temp 1 --top-k 5 --repeat-penalty 1.3 -s 2"; do
        run timeout 60 $BIN -m $TMP/nan.gguf --cpu -t 2 -p "hello there" -n 6 $mode --json
        check "$3 weights, $mode: exit 0 with valid JSON, no crash" bash -c "[ $RC -eq 0 ] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' $TMP/out"
    done
done

# block_count smaller than the layers in the file: llama.cpp refuses ("wrong
# number of tensors"); a silently ignored layer hides a wrong block_count
$PATCH $BASE $TMP/fewer.gguf set qwen3moe.block_count u32 1
run timeout 60 $BIN -m $TMP/fewer.gguf --cpu -t 1 -p hi -n 1 --temp 0
if [ $RC -eq 1 ] && grep -q "blk.1" $TMP/err; then
    ok "block_count smaller than the layers present → exit 1 naming the extra layer"
else
    fail "block_count smaller than the layers present → exit 1 naming the extra layer (exit $RC)"
fi

# --- not a model at all
: > $TMP/empty.gguf
run $BIN -m $TMP/empty.gguf -p hi
check "empty model file → exit 1" bash -c "[ $RC -eq 1 ] && grep -q '^error: .*empty' $TMP/err"
head -c 4096 tests/lib.sh > $TMP/text.gguf
run $BIN -m $TMP/text.gguf -p hi
check "a text file as model → exit 1, 'not a GGUF file'" bash -c "[ $RC -eq 1 ] && grep -q '^error: .*GGUF' $TMP/err"
run $BIN -m $TMP -p hi
check "a directory as model → exit 1" bash -c "[ $RC -eq 1 ] && grep -q '^error: ' $TMP/err"

# --- fuzz regressions: tests/regress/model/* are GGUF files that once crashed
# the loader (each must now be refused with exit 1, or load), and
# tests/regress/tokenizer/* are prompts (byte 0 = flags, as in fuzz_tokenizer)
for f in tests/regress/model/*; do
    [ -f "$f" ] || continue
    run timeout 60 $BIN -m "$f" --cpu -t 1 -p hi -n 1 --temp 0
    check "regression $(basename "$f"): exit 0 or 1, no crash" bash -c "[ $RC -eq 0 -o $RC -eq 1 ] && ! grep -qE 'Sanitizer|runtime error' $TMP/err"
done
for f in tests/regress/tokenizer/*; do
    [ -f "$f" ] || continue
    tail -c +2 "$f" > $TMP/prompt.txt
    run timeout 60 $BIN -m $BASE --cpu -t 1 --tokenize -f $TMP/prompt.txt
    check "regression $(basename "$f"): --tokenize exits 0" bash -c "[ $RC -eq 0 ] && ! grep -qE 'Sanitizer|runtime error' $TMP/err"
done

# ============================================================================
# Command lines not covered by tests/t_cli.sh
Q="$BIN -m $BASE --cpu -t 1"
for args in "-n 99999999999999999999" "--temp nan" "--temp inf" "--top-p -0.1" "--top-k -1" "-s -1" "-s abc" \
            "-t 1025" "-c 9999999999" "-c abc" "--min-p 2" "--repeat-penalty 0" "--" "-p"; do
    run timeout 60 $Q $args -p hi
    check "bad flag '$args' → exit 2 with a message" bash -c "[ $RC -eq 2 ] && grep -q '^error:' $TMP/err && [ ! -s $TMP/out ]"
done
run timeout 60 $Q -p hi -n
check "a flag missing its value at the end → exit 2" bash -c "[ $RC -eq 2 ] && grep -q 'needs a value' $TMP/err"
run timeout 60 $Q --prompt-ids 1,x -n 1
check "--prompt-ids with a non-number → exit 2" bash -c "[ $RC -eq 2 ] && grep -q 'prompt-ids' $TMP/err"
run timeout 60 $Q --prompt-ids -3 -n 1
check "--prompt-ids with a negative id → exit 2" bash -c "[ $RC -eq 2 ] && grep -q 'prompt-ids' $TMP/err"
run timeout 60 $Q --prompt-ids ",,," -n 1
check "--prompt-ids without ids → an error naming the empty prompt" bash -c "[ $RC -ne 0 ] && [ $RC -lt 128 ] && grep -qE 'empty|no token ids' $TMP/err"
run timeout 60 $Q -f $TMP -n 1
check "-f a directory → exit 2" bash -c "[ $RC -eq 2 ] && grep -q '^error:' $TMP/err"
run timeout 60 $Q -p hi -n 1 --dump-logits $TMP/no/such/dir/l.bin
check "--dump-logits into a missing directory → exit 2" bash -c "[ $RC -eq 2 ] && grep -q 'dump-logits' $TMP/err"
run timeout 60 $Q -p hi -n 2 -c 1073741823
check "a context too large for memory → exit 4, 'out of memory'" bash -c "[ $RC -eq 4 ] && grep -q 'out of memory' $TMP/err"

# prompts: invalid UTF-8 through -p and stdin, as JSON (must stay valid JSON), as ids
run timeout 60 $Q -p $'bad \xff\xfe \xc3 end' -n 3 --temp 0 --json
check "invalid UTF-8 in -p: exit 0 and valid JSON" bash -c "[ $RC -eq 0 ] && python3 -c 'import json,sys; json.loads(open(sys.argv[1],\"rb\").read().decode(\"utf-8\"))' $TMP/out"
printf 'bad \xed\xa0\x80 surrogate \xc0\xaf overlong\n' | timeout 60 $Q -n 3 --temp 0 >$TMP/out 2>$TMP/err; RC=$?
check "invalid UTF-8 on stdin: exit 0" bash -c "[ $RC -eq 0 ] && clean_stderr() { ! grep -qE 'Sanitizer|runtime error' $TMP/err; }; clean_stderr"
run timeout 60 $Q --tokenize -p $'\xff<|im_end|>\xfe'
check "--tokenize of invalid UTF-8 around a special token" bash -c "[ $RC -eq 0 ] && python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert 520 in a' $TMP/out"
printf 'a\0b' > $TMP/nul.txt
run timeout 60 $Q -f $TMP/nul.txt --tokenize; cp $TMP/out $TMP/nul.ids
run timeout 60 $Q -f $TMP/nul.txt -n 0 --json
if [ $RC -eq 0 ] && python3 -c '
import json,sys
raw=json.load(open(sys.argv[1])); p=json.load(open(sys.argv[2]))["prompt_ids"]
assert len(raw)==3 and any(p[i:i+3]==raw for i in range(len(p))), (raw, p)' $TMP/nul.ids $TMP/out 2>/dev/null; then
    ok "a NUL byte in a -f prompt is kept by the chat template"
else
    fail "a NUL byte in a -f prompt is kept by the chat template"
fi
run timeout 60 $Q -p "" -n 2 --temp 0 --raw
check "empty -p with --raw → an error naming the empty prompt, no crash" bash -c "[ $RC -ne 0 ] && [ $RC -lt 128 ] && grep -q 'empty' $TMP/err"
head -c 300000 /dev/zero | tr "\0" " " | sed "s/^/x/;s/$/y/" > $TMP/spaces.txt
run timeout 120 $Q --raw --tokenize -f $TMP/spaces.txt
check "a 300 kB run of spaces tokenizes (no quadratic blow-up, exit 0)" test $RC -eq 0

# a prompt too long for the context in the multi-prompt modes: that prompt fails, the others go on
(python3 -c "print('word ' * 100)"; echo short) | timeout 120 $Q --batch-lines -n 2 --temp 0 -c 64 --json >$TMP/out 2>$TMP/err; RC=$?
check "--batch-lines: a too-long line is an error (exit 4 at the end), the next line is still answered" \
    bash -c "[ $RC -eq 4 ] && grep -q 'context' $TMP/err && [ \$(wc -l < $TMP/out) -eq 1 ]"
(python3 -c "print('word ' * 100)"; echo short; echo /exit) | timeout 120 $Q -i -n 2 --temp 0 -c 64 >$TMP/out 2>$TMP/err; RC=$?
check "-i: a too-long turn is reported and the chat goes on (exit 0, one reply)" \
    bash -c "[ $RC -eq 0 ] && grep -q 'context' $TMP/err && [ \$(wc -l < $TMP/out) -eq 1 ]"

# output: a full disk, and a reader that goes away, in every output mode
timeout 60 $Q -p hi -n 20 --temp 0 >/dev/full 2>$TMP/err; RC=$?
check "stdout on a full disk → exit 4, 'writing to stdout'" bash -c "[ $RC -eq 4 ] && grep -q 'writing to stdout' $TMP/err"
timeout 60 $Q -p hi -n 20 --temp 0 --json >/dev/full 2>$TMP/err; RC=$?
check "--json on a full disk → exit 4" bash -c "[ $RC -eq 4 ] && grep -q 'error:' $TMP/err"
timeout 60 $Q -p hi -n 300 -c 512 --temp 0 --json 2>$TMP/err | head -c 5 >/dev/null; RCS=("${PIPESTATUS[@]}")
check "--json | head -c 5 ends quietly (exit 0)" bash -c "[ ${RCS[0]} -eq 0 ] && ! grep -q error $TMP/err"
yes 'a line of input' | head -50 | timeout 60 $Q --batch-lines -n 4 --temp 0 2>$TMP/err | head -c 3 >/dev/null; RCS=("${PIPESTATUS[@]}")
check "--batch-lines | head -c 3 ends quietly (exit 0)" bash -c "[ ${RCS[2]} -eq 0 ] && ! grep -q error $TMP/err"

# SIGINT while generating outside the chat: stop, report, exit 130, output still complete JSON
timeout 60 $Q -p hi -n -1 -c 99999 --temp 0 --raw --json >$TMP/out 2>$TMP/err &
pid=$!
sleep 1.5
kill -INT $pid 2>/dev/null
wait $pid; RC=$?
check "SIGINT during -p generation → exit 130, JSON with stop 'interrupt'" bash -c "[ $RC -eq 130 ] && python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))[\"stop\"]==\"interrupt\"' $TMP/out"
# SIGTERM is not caught: the process must just end
timeout 60 $Q -p hi -n -1 -c 99999 --temp 0 --raw >$TMP/out 2>$TMP/err &
pid=$!
sleep 1
kill -TERM $pid 2>/dev/null
wait $pid; RC=$?
check "SIGTERM ends the run (exit 143)" test $RC -eq 143
