#!/usr/bin/env bash
# tests/gpu/run.sh — GPU tests, on a machine with a CUDA device. Uses the binaries
# of `make gpu-bins` (build/gpu/). Prints ok / not ok lines, a table of the parity
# numbers, and "N passed, N failed". QUICK=1: one shape, fewer types.
# LOG=dir: keep every log there (default: a temp dir).
cd "$(dirname "$0")/../.." || exit 2
B=build/gpu
Q=$B/qwen3moe GEN=$B/gen_model TK=$B/test_kernels
LOG=${LOG:-$(mktemp -d)}
mkdir -p "$LOG"
pass=0 fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
nok() { echo "not ok - $*"; fail=$((fail + 1)); }
TABLE=$LOG/parity_table.txt
: > "$TABLE"

if ! nvidia-smi -L >/dev/null 2>&1 && [ -z "${FORCE_GPU:-}" ]; then
    echo "ok - no GPU on this machine: GPU tests skipped # SKIP"; echo "0 passed, 0 failed"; exit 0
fi
for f in "$Q" "$GEN" "$TK"; do [ -x "$f" ] || { echo "not ok - $f missing (make gpu-bins)"; echo "0 passed, 1 failed"; exit 1; }; done

# 1. kernel tests
"$TK" "${SEED:-$RANDOM}" > "$LOG/kernels.log" 2>&1; rc=$?
kp=$(grep -c '^ok ' "$LOG/kernels.log"); kf=$(grep -c '^not ok ' "$LOG/kernels.log")
grep '^not ok ' "$LOG/kernels.log" | head -20
if [ "$rc" -eq 0 ] && [ "$kf" -eq 0 ] && [ "$kp" -gt 0 ]; then ok "kernel tests: $kp checks ($(grep '^# device' "$LOG/kernels.log" | cut -c3-))"
else nok "kernel tests: $kp ok, $kf not ok, exit $rc (see $LOG/kernels.log)"; tail -3 "$LOG/kernels.log"; fi

# GAINS: extra gen_model options (e.g. --router-gain 4) for all parity models.
GAINS=${GAINS:-}
PROMPT="The quick brown fox jumps over the lazy dog. Once upon a time there was a tiny model"
# Each model is compared twice under the default (strict) thresholds: with exact
# f32 activations in the decode matvecs (QWEN3MOE_MMV=f32) and with the int8
# activations the fast path uses. --parity replays the CPU's expert sets on the GPU
# (the GPU router's own choice is what is compared), so a near-tie flip stays one
# counted flip instead of changing every later position.
parity_one() {   # name, mode, model [extra flags]
    local name=$1 mode=$2 m=$3 log=$LOG/$1.$2.parity.log rc; shift 3
    if [ "$mode" = f32 ]; then QWEN3MOE_MMV=f32 "$Q" -m "$m" --parity --raw -p "$PROMPT" -n 12 "$@" > "$log" 2>&1; rc=$?
    else "$Q" -m "$m" --parity --raw -p "$PROMPT" -n 12 "$@" > "$log" 2>&1; rc=$?; fi
    local mc=$(awk '/^  mean cosine/{print $3}' "$log") mn=$(awk '/^  min cosine/{print $3}' "$log")
    local t1=$(awk '/^  top-1 agreement/{print $3}' "$log") ex=$(awk '/^  expert sets/{print $3}' "$log")
    local tt=$(sed -n 's/^  top-1 agreement.* counting \([0-9]*\) near-tie.*/\1/p' "$log") et=$(sed -n 's/^  expert sets.* counting \([0-9]*\) near-tie.*/\1/p' "$log")
    printf '%-18s %-5s %-10s %-10s %-8s %-8s %-5s %-5s rc=%s\n' "$name" "$mode" "${mc:-?}" "${mn:-?}" "${t1:-?}" "${ex:-?}" "${tt:-?}" "${et:-?}" "$rc" >> "$TABLE"
    if [ "$rc" -eq 0 ]; then ok "parity $name ($mode activations): mean cos $mc, min cos $mn, top1 $t1, experts $ex"
    else nok "parity $name ($mode activations, exit $rc): mean cos $mc, min cos $mn, top1 $t1, experts $ex"; grep -E "DIFFERS|FAIL" "$log" | head -8; fi
}
parity() {   # name, gen args...
    local name=$1; shift
    local m=$LOG/$name.gguf
    if ! "$GEN" -q -o "$m" $GAINS "$@" > "$LOG/$name.gen.log" 2>&1; then nok "gen_model $name ($*)"; return; fi
    parity_one "$name" f32 "$m"
    parity_one "$name" int8 "$m"
    rm -f "$m"
}

TYPES="f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl iq4_xs"
[ -n "${QUICK:-}" ] && TYPES="q4_k q6_k q8_0 iq4_xs"
# 2. shape A: the tiny preset (256 wide, 2 layers, 8 experts / 2 used, heads of 128)
for t in $TYPES; do parity "tiny-$t" --preset tiny --type "$t" --seed 11; done
# 3. shape B: GQA 8/2 heads of 64, 16 experts / 4 used, per-layer ff, tied output, the q4_k_m mix
if [ -z "${QUICK:-}" ]; then
    parity "b-q4_k_m" --layers 3 --embd 512 --heads 8 --heads-kv 2 --head-dim 64 --experts 16 --experts-used 4 --ff 512,256,512 --mix q4_k_m --tied --seed 5
    for t in q8_0 q5_k iq4_nl; do
        parity "b-$t" --layers 3 --embd 512 --heads 8 --heads-kv 2 --head-dim 64 --experts 16 --experts-used 4 --ff 256 --type "$t" --seed 6
    done
    parity "c-q6_k-d256" --layers 2 --embd 768 --heads 6 --heads-kv 1 --head-dim 256 --experts 12 --experts-used 3 --ff 256 --type q6_k --seed 7
fi

# 3b. the GPU on its own routing: the same comparison without the expert replay,
# for the table (a near-tie flip there may legitimately fail the strict cosine).
m=$LOG/free.gguf
if "$GEN" -q -o "$m" --preset tiny --type q4_k --seed 11 > /dev/null 2>&1; then
    "$Q" -m "$m" --parity --parity-free-routing --raw -p "$PROMPT" -n 12 --json > "$LOG/free.json" 2> "$LOG/free.parity.log"; rc=$?
    if { [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; } && grep -q '"expert_forced":false' "$LOG/free.json"; then
        ok "parity with --parity-free-routing runs and reports (exit $rc): $(grep -E 'mean cosine|expert sets' "$LOG/free.parity.log" | tr -s ' ' | tr '\n' ';')"
    else nok "parity with --parity-free-routing (exit $rc)"; tail -5 "$LOG/free.parity.log"; fi
    rm -f "$m"
fi

# 3b''. the older unstaged decode kernels (QWEN3MOE_MMV=direct, kept for A/B), which still
# take their input from the separate RMSNorm launches, under the strict thresholds
m=$LOG/direct.gguf
if "$GEN" -q -o "$m" --preset tiny --type q4_k --seed 11 > /dev/null 2>&1; then
    QWEN3MOE_MMV=direct "$Q" -m "$m" --parity --raw -p "$PROMPT" -n 12 > "$LOG/direct.parity.log" 2>&1; rc=$?
    if [ "$rc" -eq 0 ]; then ok "parity with QWEN3MOE_MMV=direct: $(grep -E 'mean cosine|expert sets' "$LOG/direct.parity.log" | tr -s ' ' | tr '\n' ';')"
    else nok "parity with QWEN3MOE_MMV=direct (exit $rc)"; tail -8 "$LOG/direct.parity.log"; fi
    rm -f "$m"
fi

# 3b'. --parity takes its tokens from every input mode: -f, stdin, --prompt-ids (and -p above)
m=$LOG/modes.gguf
if "$GEN" -q -o "$m" --preset tiny --type q8_0 --seed 4 > /dev/null 2>&1; then
    printf '%s' "$PROMPT" > "$LOG/prompt.txt"
    "$Q" -m "$m" --parity -f "$LOG/prompt.txt" -n 4 --json > "$LOG/pm-f.json" 2> "$LOG/pm-f.log"; r1=$?
    printf '%s' "$PROMPT" | "$Q" -m "$m" --parity -n 4 --json > "$LOG/pm-s.json" 2> "$LOG/pm-s.log"; r2=$?
    "$Q" -m "$m" --parity --prompt-ids 1,2,3,4,5,6,7,8,9,10 -n 4 --json > "$LOG/pm-i.json" 2> "$LOG/pm-i.log"; r3=$?
    # -f and stdin give the same templated prompt, so the same positions; --prompt-ids 10 + 3
    pf=$(grep -o '"positions":[0-9][0-9]*' "$LOG/pm-f.json"); ps=$(grep -o '"positions":[0-9][0-9]*' "$LOG/pm-s.json")
    if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ $r3 -eq 0 ] && [ -n "$pf" ] && [ "$pf" = "$ps" ] && grep -q '"positions":13' "$LOG/pm-i.json"; then
        ok "--parity with -f, stdin and --prompt-ids: each passes ($pf, same for stdin; --prompt-ids 13)"
    else nok "--parity input modes: exit $r1/$r2/$r3, -f $pf, stdin $ps"; tail -2 "$LOG/pm-f.log" "$LOG/pm-s.log" "$LOG/pm-i.log"; fi
    rm -f "$m"
fi

# 3d. the persistent decode kernel (k_persist: heads of 128, weights of one of its type
# families: Q4_K + Q6_K, Q8_0, Q4_0 + Q6_K; one model each). It must be
# the path decode takes for such a model, pass the strict thresholds on a prompt long enough
# that decode attention spans several chunks, and on a shape with 16 query heads per KV head
# (several attention items per head) and 8 experts used; the kernel graph it replaces stays
# checked with QWEN3MOE_PERSIST=0. The same runs check that prefill multiplied the experts
# with k_expert_gemm (device routing), and QWEN3MOE_MOE=dequant keeps the older
# dequantize + cuBLAS path checked.
LONG="$PROMPT"; for i in 1 2 3 4 5 6 7 8; do LONG="$LONG $PROMPT"; done
for spec in "pk-tiny-q4_k|--preset tiny --type q4_k --seed 11" "pk-tiny-q6_k|--preset tiny --type q6_k --seed 12" \
            "pk-tiny-q8_0|--preset tiny --type q8_0 --seed 13" "pk-tiny-mix-q4_0|--preset tiny --mix q4_0 --seed 14" \
            "pk-g16-q4_k_m|--layers 2 --embd 512 --heads 16 --heads-kv 1 --head-dim 128 --experts 16 --experts-used 8 --ff 256 --mix q4_k_m --seed 5" \
            "pk-tiny-q4_k-out-q8_0|--preset tiny --type q4_k --tensor-type ^output\.weight=q8_0 --seed 16"; do
    name=${spec%%|*} m=$LOG/${spec%%|*}.gguf
    if ! "$GEN" -q -o "$m" ${spec#*|} > /dev/null 2>&1; then nok "gen_model $name"; continue; fi
    "$Q" -m "$m" --parity --raw -p "$LONG" -n 12 > "$LOG/$name.parity.log" 2>&1; rc=$?
    path=$(sed -n 's/^  GPU decode *//p' "$LOG/$name.parity.log")
    if [ "$rc" -eq 0 ] && [ "${path#persistent kernel}" != "$path" ]; then
        ok "parity $name, long prompt, on the $path: $(grep -E 'mean cosine|min cosine|expert sets' "$LOG/$name.parity.log" | tr -s ' ' | cut -c1-60 | tr '\n' ';')"
    else nok "parity $name on the persistent kernel (exit $rc, decode: ${path:-?})"; grep -E "FAIL|DIFFERS|rror" "$LOG/$name.parity.log" | head -5; fi
    # the chunked attention (AM_DEEP: block items per chunk, then the chunk merge) from
    # position 0 on, so that every decode step of the long prompt takes it; the default
    # above takes AM_ONE (one item per head group over all positions) below 256
    QWEN3MOE_PERSIST_CHUNKED=0 "$Q" -m "$m" --parity --raw -p "$LONG" -n 12 > "$LOG/$name.chunked.parity.log" 2>&1; rc=$?
    path=$(sed -n 's/^  GPU decode *//p' "$LOG/$name.chunked.parity.log")
    if [ "$rc" -eq 0 ] && [ "${path%attention chunked from position 0}" != "$path" ]; then
        ok "parity $name, long prompt, QWEN3MOE_PERSIST_CHUNKED=0 on the $path: $(grep -E 'mean cosine|min cosine' "$LOG/$name.chunked.parity.log" | tr -s ' ' | cut -c1-60 | tr '\n' ';')"
    else nok "parity $name with QWEN3MOE_PERSIST_CHUNKED=0 (exit $rc, decode: ${path:-?})"; grep -E "FAIL|DIFFERS|rror" "$LOG/$name.chunked.parity.log" | head -5; fi
    # a grid of 7 blocks: A's 34 head halves loop over it (every block also holds v groups),
    # and every other phase's units loop too
    if [ "$name" = pk-g16-q4_k_m ]; then
        # chunked items in several rounds: 2 blocks, 2 items (groups of 8 query heads) a chunk,
        # chunks of 256 positions (the staging's most), so a prompt past 256 tokens takes the
        # blocks round at least twice, the later items issuing all of their rows themselves
        QWEN3MOE_PERSIST_GRID=2 QWEN3MOE_PERSIST_CHUNKED=0 "$Q" -m "$m" --parity --raw -p "$LONG $LONG" -n 8 > "$LOG/$name.chunked2.parity.log" 2>&1; rc=$?
        path=$(sed -n 's/^  GPU decode *//p' "$LOG/$name.chunked2.parity.log")
        np=$(sed -n 's/^parity: CPU reference over [0-9]* positions (\([0-9]*\) prompt.*/\1/p' "$LOG/$name.chunked2.parity.log" | head -1)
        if [ "$rc" -eq 0 ] && [ "${path#persistent kernel, 2 blocks}" != "$path" ] && [ "${np:-0}" -gt 256 ]; then
            ok "parity $name, $np-token prompt, chunked attention on 2 blocks (several rounds): $(grep -E 'mean cosine|min cosine' "$LOG/$name.chunked2.parity.log" | tr -s ' ' | cut -c1-60 | tr '\n' ';')"
        else nok "parity $name, chunked attention on 2 blocks (exit $rc, decode: ${path:-?}, prompt ${np:-?} tokens)"; grep -E "FAIL|DIFFERS|rror" "$LOG/$name.chunked2.parity.log" | head -5; fi
        QWEN3MOE_PERSIST_CHUNKED=soon "$Q" -m "$m" --parity --raw -p "$PROMPT" -n 4 > "$LOG/$name.chunkedbad.parity.log" 2>&1; rc=$?
        path=$(sed -n 's/^  GPU decode *//p' "$LOG/$name.chunkedbad.parity.log")
        if [ "$rc" -eq 0 ] && [ "${path#kernel graph (QWEN3MOE_PERSIST_CHUNKED}" != "$path" ]; then ok "QWEN3MOE_PERSIST_CHUNKED=soon is refused with its reason: $path"
        else nok "QWEN3MOE_PERSIST_CHUNKED=soon (exit $rc, decode: ${path:-?})"; fi
        QWEN3MOE_PERSIST_GRID=7 "$Q" -m "$m" --parity --raw -p "$LONG" -n 12 > "$LOG/$name.grid7.parity.log" 2>&1; rc=$?
        path=$(sed -n 's/^  GPU decode *//p' "$LOG/$name.grid7.parity.log")
        if [ "$rc" -eq 0 ] && [ "${path#persistent kernel, 7 blocks}" != "$path" ]; then
            ok "parity $name with QWEN3MOE_PERSIST_GRID=7 on the $path: $(grep -E 'mean cosine|min cosine' "$LOG/$name.grid7.parity.log" | tr -s ' ' | cut -c1-60 | tr '\n' ';')"
        else nok "parity $name with QWEN3MOE_PERSIST_GRID=7 (exit $rc, decode: ${path:-?})"; grep -E "FAIL|DIFFERS|rror" "$LOG/$name.grid7.parity.log" | head -5; fi
        # greedy generation queues step t + 1 (its token fed on the GPU from step t's argmax)
        # before reading step t: the same ids as the host picking the argmax of each step's
        # logits (--top-k 1, the same decode graph), on the persistent kernel and the graph
        for pk in 1 0; do
            QWEN3MOE_PERSIST=$pk "$Q" -m "$m" --raw -p "$PROMPT" -n 40 --temp 0 --json > "$LOG/$name.greedy$pk.json" 2> "$LOG/$name.greedy$pk.log"; rc1=$?
            QWEN3MOE_PERSIST=$pk "$Q" -m "$m" --raw -p "$PROMPT" -n 40 --temp 1 --top-k 1 --json > "$LOG/$name.topk1$pk.json" 2> "$LOG/$name.topk1$pk.log"; rc2=$?
            g1=$(sed -n 's/.*"generated_ids":\(\[[^]]*\]\).*/\1/p' "$LOG/$name.greedy$pk.json")
            g2=$(sed -n 's/.*"generated_ids":\(\[[^]]*\]\).*/\1/p' "$LOG/$name.topk1$pk.json")
            # (this model's small vocabulary reaches its end token within the 40: the step
            # queued after it is dropped)
            n1=$(echo "$g1" | tr ',' '\n' | grep -c '[0-9]')
            st=$(sed -n 's/.*"stop":"\([a-z]*\)".*/\1/p' "$LOG/$name.greedy$pk.json")
            if [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ] && [ "$n1" -ge 8 ] && [ "$g1" = "$g2" ]; then
                ok "$name, QWEN3MOE_PERSIST=$pk: queued greedy decode gives the host's argmax ids ($n1 ids, stop: $st)"
            else nok "$name, QWEN3MOE_PERSIST=$pk: queued greedy decode (exits $rc1 / $rc2, $n1 ids) differs from --top-k 1"; echo "  $g1"; echo "  $g2"; tail -2 "$LOG/$name.greedy$pk.log"; fi
            # a chat of three turns from stdin: each turn's prompt is evaluated after the
            # last turn's dropped step (gpu_eval settles the queue first)
            printf 'Hello there\nTell me more\nAnd once again\n' | QWEN3MOE_PERSIST=$pk "$Q" -m "$m" -i --temp 0 -n 24 > "$LOG/$name.chat$pk.txt" 2> "$LOG/$name.chat$pk.log"; rc1=$?
            printf 'Hello there\nTell me more\nAnd once again\n' | QWEN3MOE_PERSIST=$pk "$Q" -m "$m" -i --temp 1 --top-k 1 -n 24 > "$LOG/$name.chatk$pk.txt" 2> "$LOG/$name.chatk$pk.log"; rc2=$?
            if [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ] && [ -s "$LOG/$name.chat$pk.txt" ] && cmp -s "$LOG/$name.chat$pk.txt" "$LOG/$name.chatk$pk.txt"; then
                ok "$name, QWEN3MOE_PERSIST=$pk: a 3-turn greedy chat from stdin gives the --top-k 1 chat's text ($(wc -c < "$LOG/$name.chat$pk.txt") bytes)"
            else nok "$name, QWEN3MOE_PERSIST=$pk: 3-turn greedy chat (exits $rc1 / $rc2) differs from --top-k 1"; tail -2 "$LOG/$name.chat$pk.log"; fi
        done
        # 0 is no grid, and 1 would put both halves of a head in A on one block, each waiting
        # on the other (a hang before this was refused): both take the graph, with the reason
        for gr in 0 1; do
            QWEN3MOE_PERSIST_GRID=$gr timeout 120 "$Q" -m "$m" --parity --raw -p "$PROMPT" -n 4 > "$LOG/$name.grid$gr.parity.log" 2>&1; rc=$?
            path=$(sed -n 's/^  GPU decode *//p' "$LOG/$name.grid$gr.parity.log")
            if [ "$rc" -eq 0 ] && [ "${path#kernel graph (QWEN3MOE_PERSIST_GRID}" != "$path" ]; then ok "QWEN3MOE_PERSIST_GRID=$gr is refused with its reason: $path"
            else nok "QWEN3MOE_PERSIST_GRID=$gr (exit $rc, decode: ${path:-?})"; fi
        done
    fi
    pf=$(sed -n 's/^  GPU prefill *//p' "$LOG/$name.parity.log")
    if [ "$pf" = "expert GEMM on quantized weights" ]; then ok "$name: prefill took the $pf"
    else nok "$name: prefill experts by '${pf:-?}', not the expert GEMM on quantized weights"; fi
    if [ "$name" = pk-tiny-q4_k ]; then
        QWEN3MOE_MOE=dequant "$Q" -m "$m" --parity --raw -p "$LONG" -n 12 > "$LOG/$name.moedq.parity.log" 2>&1; rc=$?
        pf=$(sed -n 's/^  GPU prefill *//p' "$LOG/$name.moedq.parity.log")
        if [ "$rc" -eq 0 ] && [ "${pf#experts dequantized}" != "$pf" ]; then ok "parity $name with QWEN3MOE_MOE=dequant ($pf)"
        else nok "parity $name with QWEN3MOE_MOE=dequant (exit $rc, prefill: ${pf:-?})"; fi
        QWEN3MOE_PERSIST=0 "$Q" -m "$m" --parity --raw -p "$PROMPT" -n 12 > "$LOG/$name.graph.parity.log" 2>&1; rc=$?
        path=$(sed -n 's/^  GPU decode *//p' "$LOG/$name.graph.parity.log")
        if [ "$rc" -eq 0 ] && [ "${path#kernel graph}" != "$path" ]; then ok "parity $name with QWEN3MOE_PERSIST=0 on the $path"
        else nok "parity $name with QWEN3MOE_PERSIST=0 (exit $rc, decode: ${path:-?})"; fi
    fi
    rm -f "$m"
done

# 3f. the top-k's ties: a router of zeros gives every expert the logit 0, so the CPU
# (router_topk_sp: ties to the lower id) takes experts 0..K-1 at every layer and position,
# and the GPU's own choice must be identical: the persistent kernel's ranks (8 to 160
# experts: 160 takes the rank loop round the block's threads twice, 12 its scalar loop for
# counts that are not a multiple of 8) and the kernel graph's k_topk.
for spec in "tie-e8|--preset tiny" "tie-e12|--experts 12 --experts-used 3" "tie-e16|--experts 16 --experts-used 4" "tie-e128|--experts 128 --experts-used 8" \
            "tie-e160|--experts 160 --experts-used 8"; do
    name=${spec%%|*} m=$LOG/${spec%%|*}.gguf shape="--layers 2 --embd 256 --heads 2 --heads-kv 1 --head-dim 128 --ff 256"
    [ "$name" = tie-e8 ] && shape=
    if ! "$GEN" -q -o "$m" $shape ${spec#*|} --type q4_k --router-gain 0 --seed 21 > /dev/null 2>&1; then nok "gen_model $name"; continue; fi
    for pk in 1 0; do
        QWEN3MOE_PERSIST=$pk "$Q" -m "$m" --parity --raw -p "$PROMPT" -n 6 > "$LOG/$name.$pk.parity.log" 2>&1; rc=$?
        path=$(sed -n 's/^  GPU decode *//p' "$LOG/$name.$pk.parity.log")
        same=$(sed -n 's/^  expert sets .*; \([0-9]*\)\/\([0-9]*\) identical.*/\1 \2/p' "$LOG/$name.$pk.parity.log")
        want=persistent; [ $pk = 0 ] && want="kernel graph"
        if [ "$rc" -eq 0 ] && [ -n "$same" ] && [ "${same% *}" = "${same#* }" ] && [ "${path#$want}" != "$path" ]; then
            ok "$name, all logits 0, on the ${path%%,*}: the GPU's expert sets are the CPU's lowest ids (${same% *} of ${same#* } identical)"
        else nok "$name, all logits 0, QWEN3MOE_PERSIST=$pk (exit $rc, decode: ${path:-?}): expert sets ${same:-?} identical"; grep -E "FAIL|DIFFER|cosine|top-1|result|rror" "$LOG/$name.$pk.parity.log" | head -8; fi
    done
    rm -f "$m"
done

# 3e. prefill with the two expert paths in one model: layer 0's experts on k_expert_gemm
# (routed on the device), layer 1's F16 experts through the host-routed f16 + cuBLAS path;
# the routers' choices of both are recorded for --parity's expert-set comparison
m=$LOG/mixed-moe.gguf
if "$GEN" -q -o "$m" --preset tiny --type q4_k --tensor-type 'blk\.1\.ffn_(gate|up|down)_exps=f16' --seed 15 > /dev/null 2>&1; then
    "$Q" -m "$m" --parity --raw -p "$LONG" -n 8 > "$LOG/mixed-moe.parity.log" 2>&1; rc=$?
    pf=$(sed -n 's/^  GPU prefill *//p' "$LOG/mixed-moe.parity.log")
    if [ "$rc" -eq 0 ] && [ "$pf" = "expert GEMM on quantized weights in 1 of 2 layers, f16 + cuBLAS in the rest" ]; then
        ok "parity with layer 0 on the expert GEMM and layer 1 (F16 experts) on f16 + cuBLAS: $(grep -E 'mean cosine|expert sets' "$LOG/mixed-moe.parity.log" | tr -s ' ' | cut -c1-60 | tr '\n' ';')"
    else nok "parity on a model with both prefill expert paths (exit $rc, prefill: ${pf:-?})"; grep -E "FAIL|DIFFERS|rror" "$LOG/mixed-moe.parity.log" | head -5; fi
    rm -f "$m"
else nok "gen_model mixed-moe"; fi

# 3c. a KV cache that cannot fit: refused before any upload, naming what it needs and -c
m=$LOG/vram.gguf
if "$GEN" -q -o "$m" --preset tiny --layers 8 --heads 8 --heads-kv 8 --type q4_0 --seed 2 > /dev/null 2>&1; then
    "$Q" -m "$m" --gpu -c 8000000 -p hi -n 1 > /dev/null 2> "$LOG/vram.log"; rc=$?
    if [ "$rc" -eq 4 ] && grep -q 'GiB free; try a smaller -c' "$LOG/vram.log" && ! grep -q 'loading to GPU' "$LOG/vram.log"; then
        ok "a KV cache larger than free VRAM is refused up front: $(grep -o 'the model needs.*' "$LOG/vram.log" | head -1)"
    else nok "oversized -c on the GPU (exit $rc)"; tail -3 "$LOG/vram.log"; fi
    rm -f "$m"
fi

# 4. compute-sanitizer on one parity run (a Q4_K model: the persistent decode kernel)
if command -v compute-sanitizer >/dev/null; then
    m=$LOG/san.gguf
    "$GEN" -q -o "$m" --preset tiny --type q4_k --seed 3 > /dev/null 2>&1
    # each tool twice: as decode runs (AM_ONE), and with the chunked attention from position 0 on
    for ck in "" 0; do for tool in memcheck racecheck; do
        env ${ck:+QWEN3MOE_PERSIST_CHUNKED=$ck} compute-sanitizer --tool $tool --error-exitcode 99 "$Q" -m "$m" --parity --raw -p "$PROMPT" -n 4 > "$LOG/san-$tool$ck.log" 2>&1; rc=$?
        summ=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOG/san-$tool$ck.log" | tail -1)
        if [ "$rc" -eq 0 ]; then ok "compute-sanitizer $tool on a parity run${ck:+ (QWEN3MOE_PERSIST_CHUNKED=0)}: ${summ:-clean}"
        else nok "compute-sanitizer $tool${ck:+ (QWEN3MOE_PERSIST_CHUNKED=0)} (exit $rc): $summ"; grep -m5 -A6 -E '=+ (Invalid|Error|Race|.*hazard)' "$LOG/san-$tool$ck.log"; fi
    done; done
    rm -f "$m"
else
    nok "compute-sanitizer not found"
fi

echo "# parity: name activations mean_cos min_cos top1 experts top1_ties expert_ties"
cat "$TABLE"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
