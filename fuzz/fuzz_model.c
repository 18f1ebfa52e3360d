/* libFuzzer harness: arbitrary bytes as a GGUF model file.
 *
 *   gguf_parse → load_weights (config + shape validation) → tokenizer_load,
 *   then, when the file is accepted, the things a run does first with it:
 *   dequantize the first and last row of every bound tensor (ASan sees any
 *   tensor that pokes out of the buffer), run three positions of the CPU
 *   forward pass and sample from the logits (greedy and with every sampler
 *   stage on), tokenize a fixed text with the file's vocabulary and merges,
 *   and decode every id.
 *
 * A refused file must be refused through die(EXIT_MODEL, ...): any other exit
 * code, a crash, a sanitizer report or a hang is a finding.
 * Seeds: build/fuzz-corpus/model (fuzz/make_corpus.sh). */
#include "fuzz_common.h"

static const char *SAMPLE =
    "Hello, world! 123 4567 naïve café\r\n\t  spaces  <|im_start|>user\nhi<|im_end|>\n<think>\n\n</think>"
    " ok'll 日本語 🙂 \xff\xc3 end";

static void check_row(const Tensor *t, float *buf) {
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    FUZZ_CHECK(t->data != NULL && rows >= 1, "tensor %s bound without data", t->name);
    FUZZ_CHECK((uint64_t)rows * t->row_bytes <= t->nbytes, "tensor %s: %lld rows of %zu bytes exceed its %zu bytes",
               t->name, (long long)rows, t->row_bytes, t->nbytes);
    tensor_row(t, 0, buf);
    tensor_row(t, rows - 1, buf);
}

static int64_t max_ne0(const Weights *w) {
    int64_t mx = w->token_embd.ne[0];
    for (int il = 0; il < w->cfg.n_layer; il++) {
        const Layer *L = &w->layers[il];
        const Tensor *ts[] = {&L->attn_norm, &L->attn_q, &L->attn_k, &L->attn_v, &L->attn_q_norm, &L->attn_k_norm,
                              &L->attn_output, &L->ffn_norm, &L->ffn_gate_inp, &L->ffn_gate_exps, &L->ffn_up_exps,
                              &L->ffn_down_exps};
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) if (ts[i]->ne[0] > mx) mx = ts[i]->ne[0];
    }
    return mx;
}

static void exercise(const Model *m, const Tokenizer *t) {
    const Weights *w = &m->w;
    float *buf = xmalloc((size_t)max_ne0(w) * sizeof(float) + 64);
    check_row(&w->token_embd, buf);
    check_row(&w->output_norm, buf);
    check_row(&w->output, buf);
    for (int il = 0; il < w->cfg.n_layer; il++) {
        const Layer *L = &w->layers[il];
        const Tensor *ts[] = {&L->attn_norm, &L->attn_q, &L->attn_k, &L->attn_v, &L->attn_q_norm, &L->attn_k_norm,
                              &L->attn_output, &L->ffn_norm, &L->ffn_gate_inp, &L->ffn_gate_exps, &L->ffn_up_exps,
                              &L->ffn_down_exps};
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) check_row(ts[i], buf);
    }
    free(buf);

    /* a few positions of the CPU forward pass (the file is small, so is the work) */
    Engine e;
    engine_init(&e, m, t, 0, 4, 1);
    int V = w->cfg.n_vocab;
    int toks[3] = {0, V - 1, t->eos >= 0 ? t->eos : V / 2};
    engine_eval(&e, toks, 2, 0, NULL);
    engine_eval(&e, toks + 2, 1, 1, NULL);
    Sampler greedy = {0}, hot = {.temp = 0.8f, .top_k = 3, .top_p = 0.9f, .min_p = 0.05f, .repeat_penalty = 1.3f,
                                  .repeat_last_n = 64, .rng = 42};
    float *lg = xmalloc((size_t)V * sizeof(float));
    memcpy(lg, e.logits, (size_t)V * sizeof(float));
    int id = sample(&greedy, lg, V, e.history, (int)arrlen(e.history));
    FUZZ_CHECK(id >= 0 && id < V, "greedy sample %d outside [0, %d)", id, V);
    memcpy(lg, e.logits, (size_t)V * sizeof(float));
    id = sample(&hot, lg, V, e.history, (int)arrlen(e.history));
    FUZZ_CHECK(id >= 0 && id < V, "sample %d outside [0, %d)", id, V);
    free(lg);
    engine_free(&e);

    FUZZ_CHECK(t->eos >= -1 && t->eos < t->n_vocab, "eos %d", t->eos);
    char piece[4 * 1024 + 16];
    for (int ps = 0; ps <= 1; ps++) {
        int *ids = tokenize(t, SAMPLE, strlen(SAMPLE), ps);
        for (ptrdiff_t i = 0; i < arrlen(ids); i++) {
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < t->n_vocab, "id %d outside [0, %d)", ids[i], t->n_vocab);
            int k = token_piece(t, ids[i], piece, 1);
            FUZZ_CHECK(k >= 0 && k <= 4 * 1024 + 8, "piece of %d has %d bytes", ids[i], k);
        }
        arrfree(ids);
    }
}

/* libFuzzer calls this before it handles -close_fd_mask (run.sh passes 2 for
 * this harness: a warning per input, e.g. about tokenizer.ggml.pre, would
 * flood the log and slow the run). */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fuzz_keep_stderr();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Model m;
    static Tokenizer t;
    static volatile int stage;
    jmp_buf jb;
    stage = 0;
    g_die_jump = &jb;
    int code = setjmp(jb);
    if (code == 0) {
        stage = 1;
        model_open_memory(&m, data, size, "fuzz.gguf");
        stage = 2;
        tokenizer_load(&t, &m);
        stage = 3;
        exercise(&m, &t);
        g_die_jump = NULL;
        tokenizer_free(&t);
        model_close(&m);
        return 0;
    }
    g_die_jump = NULL;
    /* die() jumped back: a refused model must be refused as a bad model file */
    FUZZ_CHECK(code == EXIT_MODEL, "die() with exit code %d at stage %d (expected %d, bad model file)", code, stage, EXIT_MODEL);
    if (stage >= 2) fuzz_tokenizer_free_partial(&t, &m);
    model_close(&m);
    memset(&m, 0, sizeof m);
    return 0;
}
