/* qwen3moe — a llama.cpp-style runner for Qwen3-MoE GGUF models.
 *
 * This file is the whole host program, laid out in the order data flows:
 *   1. utilities            errors, timing, a thread pool
 *   2. format and model     GGUF mmap → Config, Layer, Weights (shapes checked)
 *   3. tokenizer            byte-level BPE, qwen2 pre-tokenizer, special tokens, chat template
 *   4. sampler              greedy / temperature, top-k, top-p, min-p, repeat penalty
 *   5. CPU forward          the reference: f32 math on dequantized weights
 *   6. generation loop      backends (CPU, GPU), streaming, stop conditions
 *   7. modes                prompt, stdin, batch lines, chat, tokenize, parity, bench
 *   8. main                 the command line
 * The GPU path lives in qwen3moe_cuda.cu behind the calls in qwen3moe.h. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STB_DS_IMPLEMENTATION
#include <stb/stb_ds.h>
#define GGUF_IMPLEMENTATION
#include "gguf.h"
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>
#include "qwen3moe.h"

#define QWEN3MOE_VERSION "0.1.0"

/* ============================================================================
 * 1. Utilities
 * ========================================================================== */

/* Exit codes (documented in the README). */
enum {
    EXIT_OK = 0,
    EXIT_MODEL = 1,     /* the model file is unreadable, malformed or unsupported */
    EXIT_USAGE = 2,     /* bad command line: unknown flag, bad number, missing file */
    EXIT_PARITY = 3,    /* --parity: CPU and GPU disagree beyond the thresholds */
    EXIT_RUNTIME = 4,   /* the run itself failed: out of memory, GPU error, prompt too long */
    EXIT_INTERRUPT = 130,
};

static const char *g_prog = "qwen3moe";

/* The fuzz harnesses (fuzz/) set this so that a refused input returns to the
 * harness instead of ending the process; the program itself never sets it. */
#include <setjmp.h>
static jmp_buf *g_die_jump = NULL;

__attribute__((noreturn, format(printf, 2, 3))) static void die(int code, const char *fmt, ...) {
    va_list ap;
    if (g_die_jump) longjmp(*g_die_jump, code);
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (code == EXIT_USAGE) fprintf(stderr, "try '%s --help' for the list of flags\n", g_prog);
    exit(code);
}

static void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "warning: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die(EXIT_RUNTIME, "out of memory allocating %zu bytes", n);
    return p;
}
static void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) die(EXIT_RUNTIME, "out of memory allocating %zu x %zu bytes", n, sz);
    return p;
}

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A writer to stdout that notices a closed pipe: `| head -c 10` must end the run
 * quietly, so SIGPIPE is ignored and a failed write exits 0 without a message. */
static void out_write(const void *p, size_t n) {
    if (n == 0) return;
    if (fwrite(p, 1, n, stdout) != n) { if (errno == EPIPE) _exit(EXIT_OK); die(EXIT_RUNTIME, "writing to stdout: %s", strerror(errno)); }
}
static void out_flush(void) {
    if (fflush(stdout) != 0) { if (errno == EPIPE) _exit(EXIT_OK); die(EXIT_RUNTIME, "writing to stdout: %s", strerror(errno)); }
}
static void out_str(const char *s) { out_write(s, strlen(s)); }

/* Ctrl-C: during a reply it stops the reply; the chat goes on. */
static volatile sig_atomic_t g_interrupted = 0;
static void on_sigint(int sig) { (void)sig; g_interrupted = 1; }

/* --- a small thread pool: the caller is thread 0 and works too ------------- */
typedef void (*TaskFn)(void *ctx, int ith, int nth);

typedef struct {
    int n;                      /* threads including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    TaskFn fn;
    void *ctx;
    unsigned generation;
    int pending;
    int stop;
    float **scratch;            /* one dequantization row buffer per thread */
} ThreadPool;

typedef struct { ThreadPool *pool; int ith; } Worker;

static void *pool_worker(void *arg) {
    Worker *w = arg;
    ThreadPool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->generation == seen && !p->stop) pthread_cond_wait(&p->start, &p->mu);
        if (p->stop) { pthread_mutex_unlock(&p->mu); break; }
        seen = p->generation;
        TaskFn fn = p->fn; void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, w->ith, p->n);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
    free(w);
    return NULL;
}

static ThreadPool *pool_create(int n, size_t scratch_floats) {
    ThreadPool *p = xcalloc(1, sizeof *p);
    p->n = n < 1 ? 1 : n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = xcalloc(p->n, sizeof(pthread_t));
    p->scratch = xcalloc(p->n, sizeof(float *));
    for (int i = 0; i < p->n; i++) p->scratch[i] = xmalloc(scratch_floats * sizeof(float));
    for (int i = 1; i < p->n; i++) {
        Worker *w = xmalloc(sizeof *w);
        w->pool = p; w->ith = i;
        if (pthread_create(&p->threads[i], NULL, pool_worker, w) != 0) die(EXIT_RUNTIME, "cannot start thread %d", i);
    }
    return p;
}

/* Runs fn(ctx, ith, nth) on every thread and returns when all are done. */
static void pool_run(ThreadPool *p, TaskFn fn, void *ctx) {
    if (p->n == 1) { fn(ctx, 0, 1); return; }
    pthread_mutex_lock(&p->mu);
    p->fn = fn; p->ctx = ctx; p->pending = p->n - 1; p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static void pool_free(ThreadPool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    for (int i = 0; i < p->n; i++) free(p->scratch[i]);
    free(p->scratch); free(p->threads);
    free(p);
}

/* ============================================================================
 * 2. Format and model load
 * ========================================================================== */

typedef struct Tokenizer Tokenizer;

typedef struct {
    const char *path;
    gguf_file gguf;
    Weights w;
    Tensor *dense;      /* unused: reserved for dense qwen3 */
} Model;

static const char *kv_type_name(uint32_t t) {
    static const char *names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                  "bool", "string", "array", "uint64", "int64", "float64"};
    return t < sizeof names / sizeof *names ? names[t] : "unknown";
}

static int kv_is_int(uint32_t t) {
    return t == GGUF_KV_UINT8 || t == GGUF_KV_INT8 || t == GGUF_KV_UINT16 || t == GGUF_KV_INT16 ||
           t == GGUF_KV_UINT32 || t == GGUF_KV_INT32 || t == GGUF_KV_UINT64 || t == GGUF_KV_INT64;
}
static int kv_is_signed(uint32_t t) {
    return t == GGUF_KV_INT8 || t == GGUF_KV_INT16 || t == GGUF_KV_INT32 || t == GGUF_KV_INT64;
}

/* Integer KV value as int64, refusing values out of [lo, hi] with the key named. */
static int64_t kv_int_value(const Model *m, const gguf_kv *kv, int64_t lo, int64_t hi) {
    if (!kv_is_int(kv->type))
        die(EXIT_MODEL, "%s: key '%s' at offset %llu: expected an integer, found %s", m->path, kv->key,
            (unsigned long long)kv->offset, kv_type_name(kv->type));
    int64_t v;
    if (kv_is_signed(kv->type)) v = kv->v.i;
    else if (kv->v.u > (uint64_t)INT64_MAX) v = INT64_MAX;
    else v = (int64_t)kv->v.u;
    if (v < lo || v > hi)
        die(EXIT_MODEL, "%s: key '%s' is %lld, expected a value in [%lld, %lld]", m->path, kv->key, (long long)v,
            (long long)lo, (long long)hi);
    return v;
}

static const gguf_kv *kv_find(const Model *m, const char *key) { return gguf_find_kv(&m->gguf, key); }

static int64_t kv_req_int(const Model *m, const char *key, int64_t lo, int64_t hi) {
    const gguf_kv *kv = kv_find(m, key);
    if (!kv) die(EXIT_MODEL, "%s: missing required key '%s'", m->path, key);
    return kv_int_value(m, kv, lo, hi);
}

static int64_t kv_opt_int(const Model *m, const char *key, int64_t def, int64_t lo, int64_t hi) {
    const gguf_kv *kv = kv_find(m, key);
    return kv ? kv_int_value(m, kv, lo, hi) : def;
}

static float kv_opt_float(const Model *m, const char *key, float def, float lo, float hi) {
    const gguf_kv *kv = kv_find(m, key);
    if (!kv) return def;
    double v;
    if (kv->type == GGUF_KV_FLOAT32 || kv->type == GGUF_KV_FLOAT64) v = kv->v.f;
    else if (kv_is_int(kv->type)) v = (double)kv_int_value(m, kv, INT64_MIN, INT64_MAX);
    else die(EXIT_MODEL, "%s: key '%s': expected a float, found %s", m->path, key, kv_type_name(kv->type));
    if (!(v >= lo && v <= hi)) die(EXIT_MODEL, "%s: key '%s' is %g, expected a value in [%g, %g]", m->path, key, v, lo, hi);
    return (float)v;
}

/* i-th element of an integer array KV. */
static int64_t kv_arr_int(const Model *m, const gguf_kv *kv, uint64_t i) {
    const uint8_t *p = kv->arr_data;
    switch (kv->arr_type) {
    case GGUF_KV_UINT8: return p[i];
    case GGUF_KV_INT8: return (int8_t)p[i];
    case GGUF_KV_UINT16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case GGUF_KV_INT16: { int16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case GGUF_KV_UINT32: { uint32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case GGUF_KV_INT32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case GGUF_KV_UINT64: { uint64_t v; memcpy(&v, p + 8 * i, 8); return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v; }
    case GGUF_KV_INT64: { int64_t v; memcpy(&v, p + 8 * i, 8); return v; }
    default:
        die(EXIT_MODEL, "%s: key '%s': expected an array of integers, found an array of %s", m->path, kv->key,
            kv_type_name(kv->arr_type));
    }
    return 0;
}

/* Points t at the named tensor after checking its type is one we compute with
 * and its shape is exactly [ne0, ne1, ne2] (trailing 1s may be omitted). */
static void bind_tensor(const Model *m, Tensor *t, const char *name, int64_t ne0, int64_t ne1, int64_t ne2) {
    const gguf_tensor *g = gguf_find_tensor(&m->gguf, name);
    if (!g) die(EXIT_MODEL, "%s: missing required tensor '%s'", m->path, name);
    const gguf_type_traits *tt = gguf_type_get(g->type);
    if (!tt || !tt->supported)
        die(EXIT_MODEL, "%s: tensor '%s' has type %s (id %u), which qwen3moe does not support", m->path, name,
            tt ? tt->name : "unknown", g->type);
    int64_t want[4] = {ne0, ne1, ne2, 1};
    for (int d = 0; d < 4; d++) {
        if (g->ne[d] != want[d])
            die(EXIT_MODEL, "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld]", m->path,
                name, (long long)g->ne[0], (long long)g->ne[1], (long long)g->ne[2], (long long)g->ne[3],
                (long long)ne0, (long long)ne1, (long long)ne2);
    }
    t->name = g->name;
    t->data = g->data;
    t->type = g->type;
    memcpy(t->ne, want, sizeof want);
    t->row_bytes = gguf_row_bytes(g->type, ne0);
    t->nbytes = g->nbytes;
}

static void bind_layer_tensor(const Model *m, Tensor *t, int il, const char *suffix, int64_t ne0, int64_t ne1, int64_t ne2) {
    char name[128];
    snprintf(name, sizeof name, "blk.%d.%s", il, suffix);
    bind_tensor(m, t, name, ne0, ne1, ne2);
}

/* Reads the qwen3moe.* hyper-parameters and binds every tensor, refusing the
 * file at the first missing key, impossible value or wrong shape. */
static void load_weights(Model *m) {
    const gguf_kv *arch = kv_find(m, "general.architecture");
    if (!arch) die(EXIT_MODEL, "%s: missing required key 'general.architecture'", m->path);
    if (arch->type != GGUF_KV_STRING)
        die(EXIT_MODEL, "%s: key 'general.architecture': expected a string, found %s", m->path, kv_type_name(arch->type));
    if (!(arch->v.str.n == 8 && memcmp(arch->v.str.s, "qwen3moe", 8) == 0))
        die(EXIT_MODEL, "%s: architecture '%.*s' is not supported (expected 'qwen3moe')", m->path,
            (int)(arch->v.str.n > 64 ? 64 : arch->v.str.n), arch->v.str.s);

    Config *c = &m->w.cfg;
    const int64_t BIG = 1 << 20;
    c->n_layer = (int)kv_req_int(m, "qwen3moe.block_count", 1, 4096);
    c->n_embd = (int)kv_req_int(m, "qwen3moe.embedding_length", 1, BIG);
    c->n_head = (int)kv_req_int(m, "qwen3moe.attention.head_count", 1, 4096);
    c->n_head_kv = (int)kv_opt_int(m, "qwen3moe.attention.head_count_kv", c->n_head, 1, 4096);
    if (c->n_head % c->n_head_kv != 0)
        die(EXIT_MODEL, "%s: attention.head_count_kv (%d) must divide attention.head_count (%d)", m->path, c->n_head_kv, c->n_head);
    /* head_dim is its own key in Qwen3: n_head*head_dim != n_embd (4096 vs 2048 for 30B-A3B) */
    c->head_dim = (int)kv_opt_int(m, "qwen3moe.attention.key_length", c->n_embd / c->n_head, 2, 65536);
    if (c->head_dim % 2 != 0) die(EXIT_MODEL, "%s: attention.key_length is %d, expected an even number (RoPE rotates halves)", m->path, c->head_dim);
    int64_t vlen = kv_opt_int(m, "qwen3moe.attention.value_length", c->head_dim, 1, 65536);
    if (vlen != c->head_dim)
        die(EXIT_MODEL, "%s: attention.value_length (%lld) differs from attention.key_length (%d); qwen3moe needs them equal", m->path, (long long)vlen, c->head_dim);
    c->n_expert = (int)kv_req_int(m, "qwen3moe.expert_count", 1, 65536);
    c->n_expert_used = (int)kv_req_int(m, "qwen3moe.expert_used_count", 1, 65536);
    if (c->n_expert_used > c->n_expert)
        die(EXIT_MODEL, "%s: expert_used_count (%d) is larger than expert_count (%d)", m->path, c->n_expert_used, c->n_expert);
    c->n_ctx_train = (int)kv_opt_int(m, "qwen3moe.context_length", 4096, 1, INT32_MAX);
    c->rms_eps = kv_opt_float(m, "qwen3moe.attention.layer_norm_rms_epsilon", 1e-6f, 0.0f, 1.0f);
    c->rope_theta = kv_opt_float(m, "qwen3moe.rope.freq_base", 10000.0f, 1e-3f, 1e12f);
    if ((int64_t)c->n_head * c->head_dim > BIG) die(EXIT_MODEL, "%s: head_count x key_length is too large", m->path);

    const gguf_tensor *emb = gguf_find_tensor(&m->gguf, "token_embd.weight");
    if (!emb) die(EXIT_MODEL, "%s: missing required tensor 'token_embd.weight'", m->path);
    if (emb->ne[1] < 1 || emb->ne[1] > INT32_MAX / 2) die(EXIT_MODEL, "%s: token_embd.weight has %lld rows", m->path, (long long)emb->ne[1]);
    c->n_vocab = (int)emb->ne[1];

    m->w.layers = xcalloc(c->n_layer, sizeof(Layer));
    const gguf_kv *ffkv = kv_find(m, "qwen3moe.expert_feed_forward_length");
    if (!ffkv) die(EXIT_MODEL, "%s: missing required key 'qwen3moe.expert_feed_forward_length'", m->path);
    if (ffkv->type == GGUF_KV_ARRAY && ffkv->arr_n != (uint64_t)c->n_layer)
        die(EXIT_MODEL, "%s: key 'qwen3moe.expert_feed_forward_length' has %llu entries, expected one per layer (%d)", m->path,
            (unsigned long long)ffkv->arr_n, c->n_layer);
    c->n_ff_max = 0;
    for (int il = 0; il < c->n_layer; il++) {
        int64_t ff = ffkv->type == GGUF_KV_ARRAY ? kv_arr_int(m, ffkv, il) : kv_int_value(m, ffkv, 1, BIG);
        if (ff < 1 || ff > BIG) die(EXIT_MODEL, "%s: expert_feed_forward_length[%d] is %lld, expected [1, %lld]", m->path, il, (long long)ff, (long long)BIG);
        m->w.layers[il].n_ff = (int)ff;
        if (ff > c->n_ff_max) c->n_ff_max = (int)ff;
    }

    const int E = c->n_embd, D = c->head_dim, NE = c->n_expert;
    bind_tensor(m, &m->w.token_embd, "token_embd.weight", E, c->n_vocab, 1);
    for (int il = 0; il < c->n_layer; il++) {
        Layer *L = &m->w.layers[il];
        const int F = L->n_ff;
        bind_layer_tensor(m, &L->attn_norm, il, "attn_norm.weight", E, 1, 1);
        bind_layer_tensor(m, &L->attn_q, il, "attn_q.weight", E, (int64_t)c->n_head * D, 1);
        bind_layer_tensor(m, &L->attn_k, il, "attn_k.weight", E, (int64_t)c->n_head_kv * D, 1);
        bind_layer_tensor(m, &L->attn_v, il, "attn_v.weight", E, (int64_t)c->n_head_kv * D, 1);
        bind_layer_tensor(m, &L->attn_q_norm, il, "attn_q_norm.weight", D, 1, 1);
        bind_layer_tensor(m, &L->attn_k_norm, il, "attn_k_norm.weight", D, 1, 1);
        bind_layer_tensor(m, &L->attn_output, il, "attn_output.weight", (int64_t)c->n_head * D, E, 1);
        bind_layer_tensor(m, &L->ffn_norm, il, "ffn_norm.weight", E, 1, 1);
        bind_layer_tensor(m, &L->ffn_gate_inp, il, "ffn_gate_inp.weight", E, NE, 1);
        bind_layer_tensor(m, &L->ffn_gate_exps, il, "ffn_gate_exps.weight", E, F, NE);
        bind_layer_tensor(m, &L->ffn_up_exps, il, "ffn_up_exps.weight", E, F, NE);
        bind_layer_tensor(m, &L->ffn_down_exps, il, "ffn_down_exps.weight", F, E, NE);
    }
    for (uint64_t i = 0; i < m->gguf.n_tensors; i++) {
        int il;
        if (sscanf(m->gguf.tensors[i].name, "blk.%d.", &il) == 1 && (il < 0 || il >= c->n_layer))
            die(EXIT_MODEL, "%s: tensor '%s' belongs to layer %d, but qwen3moe.block_count is %d", m->path,
                m->gguf.tensors[i].name, il, c->n_layer);
    }
    bind_tensor(m, &m->w.output_norm, "output_norm.weight", E, 1, 1);
    if (gguf_find_tensor(&m->gguf, "output.weight")) {
        bind_tensor(m, &m->w.output, "output.weight", E, c->n_vocab, 1);
        c->tied_output = 0;
    } else {
        m->w.output = m->w.token_embd;   /* tied: the embedding doubles as the output head */
        c->tied_output = 1;
    }
}

static void model_open(Model *m, const char *path) {
    char err[512];
    memset(m, 0, sizeof *m);
    m->path = path;
    if (gguf_open(&m->gguf, path, err, sizeof err) != 0) die(EXIT_MODEL, "%s", err);
    load_weights(m);
}

/* The same from bytes in memory (the fuzz harnesses use it). */
__attribute__((unused)) static void model_open_memory(Model *m, const uint8_t *data, size_t size, const char *name) {
    char err[512];
    memset(m, 0, sizeof *m);
    m->path = name;
    if (gguf_parse(&m->gguf, data, size, name, err, sizeof err) != 0) die(EXIT_MODEL, "%s", err);
    load_weights(m);
}

static void model_close(Model *m) {
    free(m->w.layers);
    gguf_close(&m->gguf);
}

/* One row of any supported type, dequantized to f32. */
static void tensor_row(const Tensor *t, int64_t row, float *out) {
    gguf_dequant_row(t->type, (const uint8_t *)t->data + (size_t)row * t->row_bytes, out, t->ne[0]);
}

/* ============================================================================
 * 3. Tokenizer: byte-level BPE (tokenizer.ggml.model = gpt2, pre = qwen2)
 * ========================================================================== */

enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5, TOKEN_BYTE = 6 };

typedef struct { char *key; int value; } StrInt;   /* stb_ds string hash map entry */

struct Tokenizer {
    int n_vocab;
    char **text;          /* token text as stored in the GGUF (byte-level encoded for NORMAL tokens) */
    int *len;
    int *type;
    StrInt *ids;          /* text → id */
    StrInt *ranks;        /* "left right" → merge rank */
    int *specials;        /* ids matched literally in the text (CONTROL, USER_DEFINED, UNKNOWN), longest first */
    int n_specials;
    int eos, eot;         /* generation stops at either (eot = <|im_end|> when present) */
    int im_start, im_end, think, think_end;
    int cp_of_byte[256];  /* GPT-2 byte-to-unicode table */
    int byte_of_cp[512];  /* its inverse (-1 where undefined) */
    pcre2_code *re;
    pcre2_match_data *md;
};

/* Qwen2's pre-tokenizer regex, as in tokenizer.json; llama.cpp spells the
 * case-insensitive contractions out ('[sS] …) and so do we, so that Unicode case
 * folding cannot match e.g. U+017F (long s). */
static const char *QWEN2_PRETOKENIZER =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static int utf8_len(uint8_t c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid. */
static int utf8_valid_seq(const uint8_t *s, size_t n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t r = utf8proc_iterate(s, (utf8proc_ssize_t)(n > 4 ? 4 : n), &cp);
    return r > 0 ? (int)r : 0;
}

static int utf8_encode(int cp, char *out) {
    return (int)utf8proc_encode_char(cp, (utf8proc_uint8_t *)out);
}

/* Invalid bytes become U+FFFD, as llama.cpp does, so that the regex and NFC
 * only ever see valid UTF-8. Returns a malloc'd copy and its length. */
static char *utf8_sanitize(const char *s, size_t n, size_t *out_n) {
    char *out = xmalloc(n * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int k = utf8_valid_seq((const uint8_t *)s + i, n - i);
        if (k > 0) { memcpy(out + o, s + i, k); o += k; i += k; }
        else { memcpy(out + o, "\xEF\xBF\xBD", 3); o += 3; i += 1; }
    }
    out[o] = 0;
    *out_n = o;
    return out;
}

static int token_id(const Tokenizer *t, const char *text) {
    StrInt *ids = t->ids;   /* stb_ds lookups write to the map variable: use a copy */
    ptrdiff_t i = shgeti(ids, text);
    return i < 0 ? -1 : t->ids[i].value;
}

static int cmp_special_len(const void *a, const void *b, void *ctx) {
    const Tokenizer *t = ctx;
    int ia = *(const int *)a, ib = *(const int *)b;
    if (t->len[ia] != t->len[ib]) return t->len[ib] - t->len[ia];
    return ia - ib;
}

static void tokenizer_load(Tokenizer *t, const Model *m) {
    memset(t, 0, sizeof *t);
    const char *path = m->path;
    const gguf_kv *model = kv_find(m, "tokenizer.ggml.model");
    if (!model) die(EXIT_MODEL, "%s: missing required key 'tokenizer.ggml.model'", path);
    if (model->type != GGUF_KV_STRING || !(model->v.str.n == 4 && memcmp(model->v.str.s, "gpt2", 4) == 0))
        die(EXIT_MODEL, "%s: tokenizer.ggml.model must be 'gpt2' (byte-level BPE), found '%.*s'", path,
            model->type == GGUF_KV_STRING ? (int)(model->v.str.n > 64 ? 64 : model->v.str.n) : 4,
            model->type == GGUF_KV_STRING ? model->v.str.s : "?");
    const gguf_kv *pre = kv_find(m, "tokenizer.ggml.pre");
    if (pre && pre->type == GGUF_KV_STRING && !(pre->v.str.n == 5 && memcmp(pre->v.str.s, "qwen2", 5) == 0))
        warn("%s: tokenizer.ggml.pre is '%.*s'; using the qwen2 pre-tokenizer", path,
             (int)(pre->v.str.n > 64 ? 64 : pre->v.str.n), pre->v.str.s);

    const gguf_kv *toks = kv_find(m, "tokenizer.ggml.tokens");
    if (!toks) die(EXIT_MODEL, "%s: missing required key 'tokenizer.ggml.tokens'", path);
    if (toks->type != GGUF_KV_ARRAY || toks->arr_type != GGUF_KV_STRING)
        die(EXIT_MODEL, "%s: key 'tokenizer.ggml.tokens': expected an array of strings", path);
    if (toks->arr_n != (uint64_t)m->w.cfg.n_vocab)
        die(EXIT_MODEL, "%s: the vocabulary has %llu tokens but token_embd.weight has %d rows", path,
            (unsigned long long)toks->arr_n, m->w.cfg.n_vocab);
    const int n = t->n_vocab = m->w.cfg.n_vocab;
    const gguf_kv *types = kv_find(m, "tokenizer.ggml.token_type");
    if (types && (types->type != GGUF_KV_ARRAY || types->arr_n != (uint64_t)n || !kv_is_int(types->arr_type)))
        die(EXIT_MODEL, "%s: key 'tokenizer.ggml.token_type': expected an integer array of %d entries", path, n);

    t->text = xcalloc(n, sizeof(char *));
    t->len = xmalloc(n * sizeof(int));
    t->type = xmalloc(n * sizeof(int));
    sh_new_arena(t->ids);
    for (int i = 0; i < n; i++) {
        gguf_str s = toks->arr_str[i];
        if (s.n > 1024) die(EXIT_MODEL, "%s: token %d is %llu bytes long, expected at most 1024", path, i, (unsigned long long)s.n);
        t->text[i] = xmalloc(s.n + 1);
        memcpy(t->text[i], s.s, s.n);
        t->text[i][s.n] = 0;
        t->len[i] = (int)s.n;
        t->type[i] = types ? (int)kv_arr_int(m, types, i) : TOKEN_NORMAL;
        /* the first of duplicate texts wins, as in llama.cpp */
        if (shgeti(t->ids, t->text[i]) < 0) shput(t->ids, t->text[i], i);
    }

    const gguf_kv *merges = kv_find(m, "tokenizer.ggml.merges");
    sh_new_arena(t->ranks);
    if (merges) {
        if (merges->type != GGUF_KV_ARRAY || merges->arr_type != GGUF_KV_STRING)
            die(EXIT_MODEL, "%s: key 'tokenizer.ggml.merges': expected an array of strings", path);
        char buf[2100];
        for (uint64_t i = 0; i < merges->arr_n; i++) {
            gguf_str s = merges->arr_str[i];
            if (s.n >= sizeof buf || memchr(s.s, ' ', s.n) == NULL)
                die(EXIT_MODEL, "%s: merge %llu is not of the form 'left right'", path, (unsigned long long)i);
            memcpy(buf, s.s, s.n);
            buf[s.n] = 0;
            if (shgeti(t->ranks, buf) < 0) shput(t->ranks, buf, (int)i);
        }
    }

    /* GPT-2's byte-to-unicode map: printable bytes stand for themselves, the
     * others are moved to U+0100.. so that every token is printable text. */
    int next = 256;
    for (int i = 0; i < 512; i++) t->byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        t->cp_of_byte[b] = printable ? b : next++;
        t->byte_of_cp[t->cp_of_byte[b]] = b;
    }

    for (int i = 0; i < n; i++)
        if ((t->type[i] == TOKEN_CONTROL || t->type[i] == TOKEN_USER_DEFINED || t->type[i] == TOKEN_UNKNOWN) && t->len[i] > 0)
            arrput(t->specials, i);
    t->n_specials = (int)arrlen(t->specials);
    if (t->n_specials) qsort_r(t->specials, t->n_specials, sizeof(int), cmp_special_len, t);

    t->im_start = token_id(t, "<|im_start|>");
    t->im_end = token_id(t, "<|im_end|>");
    t->think = token_id(t, "<think>");
    t->think_end = token_id(t, "</think>");
    t->eos = (int)kv_opt_int(m, "tokenizer.ggml.eos_token_id", t->im_end >= 0 ? t->im_end : -1, -1, INT32_MAX);
    if (t->eos >= n) die(EXIT_MODEL, "%s: tokenizer.ggml.eos_token_id is %d, outside the vocabulary of %d tokens", path, t->eos, n);
    for (const char **k = (const char *[]){"tokenizer.ggml.bos_token_id", "tokenizer.ggml.padding_token_id", NULL}; *k; k++) {
        int64_t id = kv_opt_int(m, *k, -1, -1, INT32_MAX);
        if (id >= n) die(EXIT_MODEL, "%s: %s is %lld, outside the vocabulary of %d tokens", path, *k, (long long)id, n);
    }
    t->eot = t->im_end;

    int errcode;
    PCRE2_SIZE erroff;
    t->re = pcre2_compile((PCRE2_SPTR)QWEN2_PRETOKENIZER, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK,
                          &errcode, &erroff, NULL);
    if (!t->re) die(EXIT_RUNTIME, "cannot compile the pre-tokenizer regex (PCRE2 error %d)", errcode);
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE);   /* optional: falls back to the interpreter */
    t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
}

static void tokenizer_free(Tokenizer *t) {
    for (int i = 0; i < t->n_vocab; i++) free(t->text[i]);
    free(t->text); free(t->len); free(t->type);
    shfree(t->ids); shfree(t->ranks); arrfree(t->specials);
    pcre2_match_data_free(t->md);
    pcre2_code_free(t->re);
}

/* --- BPE inside one pre-token ---------------------------------------------
 * Symbols form a linked list; candidate merges sit in a min-heap by (rank,
 * position) and stale ones are skipped when popped, so a pre-token of n
 * characters costs O(n log n) even for a 100 kB run of spaces. */
typedef struct { int start, len, prev, next; } Symbol;
typedef struct { int rank, left, right, size; } Bigram;

static int bigram_less(const Bigram *a, const Bigram *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}
static void heap_push(Bigram **h, Bigram b) {
    arrput(*h, b);
    for (ptrdiff_t i = arrlen(*h) - 1; i > 0;) {
        ptrdiff_t p = (i - 1) / 2;
        if (!bigram_less(&(*h)[i], &(*h)[p])) break;
        Bigram tmp = (*h)[i]; (*h)[i] = (*h)[p]; (*h)[p] = tmp; i = p;
    }
}
static Bigram heap_pop(Bigram **h) {
    Bigram top = (*h)[0];
    (*h)[0] = arrlast(*h);
    arrsetlen(*h, arrlen(*h) - 1);
    ptrdiff_t n = arrlen(*h);
    for (ptrdiff_t i = 0;;) {
        ptrdiff_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && bigram_less(&(*h)[l], &(*h)[m])) m = l;
        if (r < n && bigram_less(&(*h)[r], &(*h)[m])) m = r;
        if (m == i) break;
        Bigram tmp = (*h)[i]; (*h)[i] = (*h)[m]; (*h)[m] = tmp; i = m;
    }
    return top;
}

typedef struct { char *buf; Symbol *sym; Bigram *heap; char *key; } BpeScratch;

static void bpe_try_pair(const Tokenizer *t, BpeScratch *s, int l, int r) {
    if (l < 0 || r < 0) return;
    const Symbol *a = &s->sym[l], *b = &s->sym[r];
    arrsetlen(s->key, a->len + 1 + b->len + 1);
    memcpy(s->key, s->buf + a->start, a->len);
    s->key[a->len] = ' ';
    memcpy(s->key + a->len + 1, s->buf + b->start, b->len);
    s->key[a->len + 1 + b->len] = 0;
    StrInt *ranks = t->ranks;   /* stb_ds lookups write to the map variable: use a copy */
    ptrdiff_t i = shgeti(ranks, s->key);
    if (i >= 0) heap_push(&s->heap, (Bigram){ranks[i].value, l, r, a->len + b->len});
}

/* Appends the ids of one pre-token (raw bytes) to *out. */
static void bpe_word(const Tokenizer *t, BpeScratch *s, const char *word, int n, int **out) {
    /* byte-level encode: every byte becomes one printable code point */
    arrsetlen(s->buf, n * 2 + 1);
    arrsetlen(s->sym, 0);
    int o = 0;
    for (int i = 0; i < n; i++) {
        int k = utf8_encode(t->cp_of_byte[(uint8_t)word[i]], s->buf + o);
        arrput(s->sym, ((Symbol){o, k, i - 1, i + 1 < n ? i + 1 : -1}));
        o += k;
    }
    s->buf[o] = 0;
    arrsetlen(s->heap, 0);
    for (int i = 0; i + 1 < n; i++) bpe_try_pair(t, s, i, i + 1);
    while (arrlen(s->heap) > 0) {
        Bigram b = heap_pop(&s->heap);
        Symbol *l = &s->sym[b.left], *r = &s->sym[b.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != b.size) continue;   /* stale */
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s->sym[r->next].prev = b.left;
        bpe_try_pair(t, s, l->prev, b.left);
        bpe_try_pair(t, s, b.left, l->next);
    }
    for (int i = 0; i >= 0 && i < n; i = s->sym[i].next) {
        Symbol *y = &s->sym[i];
        char save = s->buf[y->start + y->len];
        s->buf[y->start + y->len] = 0;
        int id = token_id(t, s->buf + y->start);
        s->buf[y->start + y->len] = save;
        if (id >= 0) { arrput(*out, id); continue; }
        /* no token for the merged text: fall back to one token per byte */
        for (int j = y->start; j < y->start + y->len;) {
            int k = utf8_len((uint8_t)s->buf[j]);
            if (k == 0) k = 1;
            char one[8] = {0};
            memcpy(one, s->buf + j, k);
            int bid = token_id(t, one);
            if (bid >= 0) arrput(*out, bid);
            j += k;
        }
    }
}

/* Pre-tokenizes NFC text with the qwen2 regex and BPE-encodes each piece. */
static void bpe_text(const Tokenizer *t, const char *text, size_t n, int **out) {
    if (n == 0) return;
    /* Qwen's tokenizer.json normalizes to NFC first (llama.cpp does not) */
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t nn = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    const char *s = text;
    size_t len = n;
    if (nn >= 0) { s = (const char *)nfc; len = (size_t)nn; }
    BpeScratch sc = {0};
    size_t pos = 0;
    while (pos < len) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, t->md, NULL);
        size_t ms, me;
        if (rc < 0) { ms = me = len; }
        else { PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md); ms = ov[0]; me = ov[1]; }
        if (ms > pos) bpe_word(t, &sc, s + pos, (int)(ms - pos), out);   /* text no branch matched */
        if (me == ms) { if (me >= len) break; me = ms + (utf8_len((uint8_t)s[ms]) ?: 1); bpe_word(t, &sc, s + ms, (int)(me - ms), out); }
        else bpe_word(t, &sc, s + ms, (int)(me - ms), out);
        pos = me;
    }
    arrfree(sc.buf); arrfree(sc.sym); arrfree(sc.heap); arrfree(sc.key);
    free(nfc);
}

/* Text → ids. Special-token text is cut out first (longest token first, as
 * llama.cpp does); with parse_special = 0 only CONTROL tokens lose that
 * privilege — USER_DEFINED ones such as <think> are still matched, again as in
 * llama.cpp. The pieces between are BPE-encoded. Returns an stb_ds array. */
static int *tokenize(const Tokenizer *t, const char *raw, size_t raw_n, int parse_special) {
    size_t n;
    char *text = utf8_sanitize(raw, raw_n, &n);
    typedef struct { int id; size_t off, len; } Frag;   /* id < 0: plain text */
    Frag *frags = NULL;
    arrput(frags, ((Frag){-1, 0, n}));
    for (int si = 0; si < t->n_specials; si++) {
        int id = t->specials[si];
        if (!parse_special && t->type[id] != TOKEN_USER_DEFINED) continue;
        const char *tt = t->text[id];
        size_t tl = (size_t)t->len[id];
        Frag *next = NULL;
        for (ptrdiff_t f = 0; f < arrlen(frags); f++) {
            Frag fr = frags[f];
            if (fr.id >= 0 || fr.len < tl) { arrput(next, fr); continue; }
            size_t start = fr.off, end = fr.off + fr.len;
            for (;;) {
                const char *hit = memmem(text + start, end - start, tt, tl);
                if (!hit) break;
                size_t h = (size_t)(hit - text);
                if (h > start) arrput(next, ((Frag){-1, start, h - start}));
                arrput(next, ((Frag){id, h, tl}));
                start = h + tl;
            }
            if (end > start) arrput(next, ((Frag){-1, start, end - start}));
        }
        arrfree(frags);
        frags = next;
    }
    int *ids = NULL;
    for (ptrdiff_t f = 0; f < arrlen(frags); f++) {
        if (frags[f].id >= 0) arrput(ids, frags[f].id);
        else bpe_text(t, text + frags[f].off, frags[f].len, &ids);
    }
    arrfree(frags);
    free(text);
    return ids;
}

/* The bytes a token stands for when printed: byte-level decoding for normal
 * tokens, the literal text for user-defined ones (<think>), nothing for control
 * tokens (<|im_end|>). Returns the byte count written to out (>= 4*len+8). */
static int token_piece(const Tokenizer *t, int id, char *out, int show_control) {
    if (id < 0 || id >= t->n_vocab) return 0;
    int ty = t->type[id];
    if (ty == TOKEN_CONTROL || ty == TOKEN_UNUSED || ty == TOKEN_UNKNOWN) {
        if (!show_control) return 0;
        memcpy(out, t->text[id], t->len[id]);
        return t->len[id];
    }
    if (ty == TOKEN_USER_DEFINED) { memcpy(out, t->text[id], t->len[id]); return t->len[id]; }
    const uint8_t *s = (const uint8_t *)t->text[id];
    int n = t->len[id], o = 0;
    for (int i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, n - i, &cp);
        if (k <= 0) { out[o++] = (char)s[i++]; continue; }
        if (cp >= 0 && cp < 512 && t->byte_of_cp[cp] >= 0) out[o++] = (char)t->byte_of_cp[cp];
        else { memcpy(out + o, s + i, k); o += (int)k; }
        i += (int)k;
    }
    return o;
}

/* Streams decoded text without ever splitting a UTF-8 character: bytes of an
 * unfinished sequence wait for the next token. */
typedef struct { char pending[8]; int n_pending; char *collected; /* stb_ds, for --json */ int to_stdout; } TextStream;

static void stream_emit(TextStream *ts, const char *s, int n) {
    if (ts->to_stdout) out_write(s, n);
    for (int i = 0; i < n; i++) arrput(ts->collected, s[i]);
}

static void stream_push(TextStream *ts, const char *bytes, int n) {
    char buf[4096 + 8];
    char *tmp = n + ts->n_pending <= 4096 ? buf : xmalloc(n + ts->n_pending);
    memcpy(tmp, ts->pending, ts->n_pending);
    memcpy(tmp + ts->n_pending, bytes, n);
    int total = n + ts->n_pending, ok = 0;
    ts->n_pending = 0;
    while (ok < total) {
        int k = utf8_len((uint8_t)tmp[ok]);
        if (k == 0) { ok++; continue; }            /* a stray byte: pass it through */
        int c = 1;                                  /* continuation bytes present */
        while (c < k && ok + c < total && ((uint8_t)tmp[ok + c] & 0xC0) == 0x80) c++;
        if (c < k && ok + c == total) break;        /* incomplete so far: hold it back */
        if (c < k || !utf8_valid_seq((const uint8_t *)tmp + ok, k)) { ok++; continue; }   /* malformed: pass the lead byte alone */
        ok += k;
    }
    stream_emit(ts, tmp, ok);
    ts->n_pending = total - ok;
    memcpy(ts->pending, tmp + ok, ts->n_pending);
    if (tmp != buf) free(tmp);
    if (ts->to_stdout) out_flush();
}

static void stream_finish(TextStream *ts) {
    if (ts->n_pending) stream_emit(ts, ts->pending, ts->n_pending);
    ts->n_pending = 0;
    if (ts->to_stdout) out_flush();
}

/* --- the Qwen3 chat template (ChatML) ---------------------------------------
 * <|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\n{msg}<|im_end|>\n<|im_start|>assistant\n
 * and, with thinking off, an empty <think>\n\n</think>\n\n block after it. */
static void chat_append(const Tokenizer *t, int **ids, const char *role, const char *content, size_t cn, int parse_special) {
    if (t->im_start < 0 || t->im_end < 0) die(EXIT_MODEL, "the vocabulary has no <|im_start|>/<|im_end|>: use --raw");
    arrput(*ids, t->im_start);
    int *r = tokenize(t, role, strlen(role), 0);
    for (ptrdiff_t i = 0; i < arrlen(r); i++) arrput(*ids, r[i]);
    arrfree(r);
    char *body = xmalloc(cn + 2);
    body[0] = '\n';
    memcpy(body + 1, content, cn);
    body[cn + 1] = 0;
    r = tokenize(t, body, cn + 1, parse_special);
    for (ptrdiff_t i = 0; i < arrlen(r); i++) arrput(*ids, r[i]);
    arrfree(r);
    free(body);
    arrput(*ids, t->im_end);
    r = tokenize(t, "\n", 1, 0);
    for (ptrdiff_t i = 0; i < arrlen(r); i++) arrput(*ids, r[i]);
    arrfree(r);
}

static void chat_open_assistant(const Tokenizer *t, int **ids, int think) {
    arrput(*ids, t->im_start);
    const char *s = think ? "assistant\n" : "assistant\n<think>\n\n</think>\n\n";
    int *r = tokenize(t, s, strlen(s), 1);
    for (ptrdiff_t i = 0; i < arrlen(r); i++) arrput(*ids, r[i]);
    arrfree(r);
}

/* ============================================================================
 * 4. Sampler
 * ========================================================================== */

typedef struct {
    float temp;            /* 0 = greedy */
    int top_k;             /* 0 = off */
    float top_p;           /* 1 = off */
    float min_p;           /* 0 = off */
    float repeat_penalty;  /* 1 = off */
    int repeat_last_n;
    uint64_t rng;
} Sampler;

typedef struct { float p; int id; } ProbId;

static uint64_t rng_next(uint64_t *s) {   /* xorshift64* */
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}
static float rng_float(uint64_t *s) { return (rng_next(s) >> 40) / 16777216.0f; }

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

static int cmp_prob_desc(const void *a, const void *b) {
    const ProbId *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

/* llama.cpp's order: repeat penalty, top-k, top-p, min-p, temperature, draw.
 * `logits` is modified. history = the last tokens of the context. */
static int sample(Sampler *s, float *logits, int n, const int *history, int n_hist) {
    if (s->repeat_penalty != 1.0f && s->repeat_last_n != 0) {
        int from = s->repeat_last_n < 0 || n_hist < s->repeat_last_n ? 0 : n_hist - s->repeat_last_n;
        for (int i = from; i < n_hist; i++) {
            int id = history[i];
            if (id < 0 || id >= n) continue;
            int seen = 0;   /* penalize each token once, however often it occurs */
            for (int j = from; j < i; j++) if (history[j] == id) { seen = 1; break; }
            if (seen) continue;
            logits[id] = logits[id] > 0 ? logits[id] / s->repeat_penalty : logits[id] * s->repeat_penalty;
        }
    }
    if (s->temp <= 0.0f) return argmax(logits, n);

    ProbId *c = xmalloc(n * sizeof *c);
    for (int i = 0; i < n; i++) c[i] = (ProbId){logits[i], i};
    int m = n;
    if (s->top_k > 0 && s->top_k < n) {
        /* partial selection: keep the k best, then sort only those */
        for (int i = 0; i < s->top_k; i++) {
            int best = i;
            for (int j = i + 1; j < n; j++) if (c[j].p > c[best].p) best = j;
            ProbId tmp = c[i]; c[i] = c[best]; c[best] = tmp;
        }
        m = s->top_k;
    } else {
        qsort(c, n, sizeof *c, cmp_prob_desc);
    }
    float mx = c[0].p, sum = 0;
    for (int i = 0; i < m; i++) { c[i].p = expf(c[i].p - mx); sum += c[i].p; }
    for (int i = 0; i < m; i++) c[i].p /= sum;
    if (s->top_p < 1.0f) {
        float cum = 0;
        for (int i = 0; i < m; i++) { cum += c[i].p; if (cum >= s->top_p) { m = i + 1; break; } }
    }
    if (s->min_p > 0.0f) {
        float floor_p = c[0].p * s->min_p;
        int k = 1;
        while (k < m && c[k].p >= floor_p) k++;
        m = k;
    }
    /* temperature on the survivors' logits: p^(1/T), renormalized */
    sum = 0;
    for (int i = 0; i < m; i++) { c[i].p = powf(c[i].p, 1.0f / s->temp); sum += c[i].p; }
    float r = rng_float(&s->rng) * sum, cum = 0;
    int id = c[m - 1].id;
    for (int i = 0; i < m; i++) { cum += c[i].p; if (r < cum) { id = c[i].id; break; } }
    free(c);
    return id;
}

/* ============================================================================
 * 5. CPU forward — the reference: f32 math on dequantized weights
 * ========================================================================== */

typedef struct {
    int n_ctx;
    float *k, *v;   /* [n_layer][n_ctx][n_head_kv * head_dim] */
} KVCache;

typedef struct {
    float *x;          /* residual stream [n_embd] */
    float *xb, *xb2;   /* normed input, attention output [max(n_embd, n_head*head_dim)] */
    float *q, *k, *v;  /* [n_head*head_dim], [n_head_kv*head_dim] x2 */
    float *att;        /* scores [n_head][n_ctx] */
    float *router;     /* [n_expert] */
    float *gate, *up;  /* [n_expert_used][n_ff_max] */
    float *down;       /* [n_expert_used][n_embd] */
    float *logits;     /* [n_vocab] */
    int *sel;          /* chosen experts of the current layer [n_expert_used] */
    float *sel_w;
    /* record for --parity: the experts of every layer and the router's
     * probabilities over all experts (how close each choice was) */
    int *rec_experts;  /* [n_layer][n_expert_used] */
    float *rec_probs;  /* [n_layer][n_expert] */
} RunState;

typedef struct {
    const Weights *w;
    KVCache kv;
    RunState s;
    ThreadPool *pool;
} CpuModel;

static void cpu_model_init(CpuModel *cm, const Weights *w, int n_ctx, int n_threads) {
    const Config *c = &w->cfg;
    memset(cm, 0, sizeof *cm);
    cm->w = w;
    int qdim = c->n_head * c->head_dim, kvdim = c->n_head_kv * c->head_dim;
    int wide = c->n_embd > qdim ? c->n_embd : qdim;
    size_t kvn = (size_t)c->n_layer * n_ctx * kvdim;
    cm->kv.n_ctx = n_ctx;
    cm->kv.k = xcalloc(kvn, sizeof(float));
    cm->kv.v = xcalloc(kvn, sizeof(float));
    RunState *s = &cm->s;
    s->x = xcalloc(c->n_embd, sizeof(float));
    s->xb = xcalloc(wide, sizeof(float));
    s->xb2 = xcalloc(wide, sizeof(float));
    s->q = xcalloc(qdim, sizeof(float));
    s->k = xcalloc(kvdim, sizeof(float));
    s->v = xcalloc(kvdim, sizeof(float));
    s->att = xcalloc((size_t)c->n_head * n_ctx, sizeof(float));
    s->router = xcalloc(c->n_expert, sizeof(float));
    s->gate = xcalloc((size_t)c->n_expert_used * c->n_ff_max, sizeof(float));
    s->up = xcalloc((size_t)c->n_expert_used * c->n_ff_max, sizeof(float));
    s->down = xcalloc((size_t)c->n_expert_used * c->n_embd, sizeof(float));
    s->logits = xcalloc(c->n_vocab, sizeof(float));
    s->sel = xcalloc(c->n_expert_used, sizeof(int));
    s->sel_w = xcalloc(c->n_expert_used, sizeof(float));
    s->rec_experts = xcalloc((size_t)c->n_layer * c->n_expert_used, sizeof(int));
    s->rec_probs = xcalloc((size_t)c->n_layer * c->n_expert, sizeof(float));
    int widest = c->n_embd > qdim ? c->n_embd : qdim;
    if (c->n_ff_max > widest) widest = c->n_ff_max;
    cm->pool = pool_create(n_threads, (size_t)widest);
}

static void cpu_model_free(CpuModel *cm) {
    RunState *s = &cm->s;
    free(cm->kv.k); free(cm->kv.v);
    free(s->x); free(s->xb); free(s->xb2); free(s->q); free(s->k); free(s->v); free(s->att);
    free(s->router); free(s->gate); free(s->up); free(s->down); free(s->logits); free(s->sel); free(s->sel_w);
    free(s->rec_experts); free(s->rec_probs);
    pool_free(cm->pool);
}

/* Dot product with 16 independent partial sums: the compiler vectorizes it
 * without -ffast-math, and the summation order is fixed (results repeat). */
static float dot(const float *a, const float *b, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j] * b[i + j];
    float sum = 0;
    for (int j = 0; j < 16; j++) sum += acc[j];
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* --- fused row · x for the common quant types ------------------------------
 * A matvec row is W[r] · x. Dequantizing the row into a scratch buffer and then
 * calling dot() stores every weight and loads it again, and gguf.h's
 * dequantizers are shaped for storing (some vectorize poorly). The functions
 * below read each quant block once and accumulate weight × x directly.
 *
 * Precision: each weight is computed as gguf.h computes it (the same scale
 * products via the same helpers, the same f32 expression per element), then
 * multiplied by the f32 activation. The only difference from dequantize-then-dot
 * is the order in which the products are summed.
 *
 * Loop shape: acc[l] += w_l · x_l with one partial sum per element position l
 * of a block (32 or 64 of them). Without -ffast-math the compiler may not
 * reorder one running sum, but it vectorizes across l, and the many independent
 * accumulators hide the FMA latency. They are added up in a fixed order at the
 * end, so a row's value does not depend on the thread count. nb = blocks per row. */
typedef float (*RowDotFn)(const uint8_t *restrict w, const float *restrict x, int64_t nb);

static float sum_acc(const float *acc, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += acc[i];
    return s;
}

/* Q8_0: f16 d, 32 int8; weight q·d */
static float rowdot_q8_0(const uint8_t *restrict b, const float *restrict x, int64_t nb) {
    float acc[32] = {0};
    for (int64_t i = 0; i < nb; i++, b += 34, x += 32) {
        const float d = gguf__h(b);
        const int8_t *qs = (const int8_t *)(b + 2);
        for (int l = 0; l < 32; l++) acc[l] += ((float)qs[l] * d) * x[l];
    }
    return sum_acc(acc, 32);
}

/* Q4_0: f16 d, 16 bytes: low nibbles are elements 0..15, high nibbles 16..31; weight (q-8)·d */
static float rowdot_q4_0(const uint8_t *restrict b, const float *restrict x, int64_t nb) {
    float acc[32] = {0};
    for (int64_t i = 0; i < nb; i++, b += 18, x += 32) {
        const float d = gguf__h(b);
        const uint8_t *qs = b + 2;
        for (int l = 0; l < 16; l++) {
            acc[l]      += ((float)((int)(qs[l] & 15) - 8) * d) * x[l];
            acc[l + 16] += ((float)((int)(qs[l] >> 4) - 8) * d) * x[l + 16];
        }
    }
    return sum_acc(acc, 32);
}

/* Q4_K and Q6_K work in passes per 256-element super-block:
 * first the bit unpacking of all the block's quants (byte loads and integer work,
 * in loops of 128 or 256 byte-sized iterations), then the f32 products. Mixed in
 * one loop over a 16- or 32-element group, the byte loads set the vector width
 * and leave the float work in 4- or 8-lane vectors; split, each pass gets full
 * width vectors, about twice as fast. The unpacked block stays in L1. */

/* Q4_K: 4 chunks of 64 per super-block; element l < 32 of chunk c is the low
 * nibble of qs[32c + l] (scale/min pair 2c), element 32 + l the high nibble
 * (pair 2c+1). weight (d·sc)·q - dmin·m */
static float rowdot_q4_K(const uint8_t *restrict b, const float *restrict x, int64_t nb) {
    float acc[64] = {0};
    float lo[128], hi[128];
    for (int64_t i = 0; i < nb; i++, b += 144) {
        float dl[8], ml[8];
        gguf__scale_min_k4(b + 4, gguf__h(b), gguf__h(b + 2), dl, ml);
        const uint8_t *qs = b + 16;
        for (int j = 0; j < 128; j++) { lo[j] = (float)(qs[j] & 15); hi[j] = (float)(qs[j] >> 4); }
        for (int c = 0; c < 4; c++, x += 64) {
            const float d1 = dl[2 * c], m1 = ml[2 * c], d2 = dl[2 * c + 1], m2 = ml[2 * c + 1];
            for (int l = 0; l < 32; l++) {
                acc[l]      += (d1 * lo[32 * c + l] - m1) * x[l];
                acc[l + 32] += (d2 * hi[32 * c + l] - m2) * x[l + 32];
            }
        }
    }
    return sum_acc(acc, 64);
}

/* Q5_K: Q4_K plus qh[32]: bit g of qh[l] is the 5th bit of element l of group g.
 * One pass (the qh bit of chunk c needs a shift by 2c, which does not fit the
 * long unpacking loop of Q4_K; split, it measured slower). */
static float rowdot_q5_K(const uint8_t *restrict b, const float *restrict x, int64_t nb) {
    float acc[64] = {0};
    for (int64_t i = 0; i < nb; i++, b += 176) {
        float dl[8], ml[8];
        gguf__scale_min_k4(b + 4, gguf__h(b), gguf__h(b + 2), dl, ml);
        const uint8_t *qh = b + 16, *qs = b + 48;
        for (int c = 0; c < 4; c++, qs += 32, x += 64) {
            const int g1 = 2 * c, g2 = 2 * c + 1;
            const float d1 = dl[g1], m1 = ml[g1], d2 = dl[g2], m2 = ml[g2];
            for (int l = 0; l < 32; l++) {
                acc[l]      += (d1 * (float)((qs[l] & 15) | (((qh[l] >> g1) & 1) << 4)) - m1) * x[l];
                acc[l + 32] += (d2 * (float)((qs[l] >> 4) | (((qh[l] >> g2) & 1) << 4)) - m2) * x[l + 32];
            }
        }
    }
    return sum_acc(acc, 64);
}

/* Q6_K: per 128-element half, element 32t + l (t < 4, l < 32) is built from a
 * nibble of ql[l + 32(t&1)] and bits 2t..2t+1 of qh[l], minus 32; 16 groups of
 * 16 with scale d·sc[g]. Three passes: the 6-bit values as int8 (byte-wide
 * work), widened to f32 in one 256-long loop, then the products two groups at a
 * time (two sets of partial sums). The group scales are computed beforehand as
 * in gguf.h: an int8 load inside the product loop would narrow its vectors too.
 * weight (d·sc)·(q-32) */
static float rowdot_q6_K(const uint8_t *restrict b, const float *restrict x, int64_t nb) {
    float acc[32] = {0};
    int8_t q[256];
    float w[256], ds[16];
    for (int64_t i = 0; i < nb; i++, b += 210, x += 256) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = gguf__h(b + 208);
        for (int h = 0; h < 2; h++) {
            for (int l = 0; l < 32; l++) {
                const uint8_t a = ql[64 * h + l], c = ql[64 * h + l + 32], hh = qh[32 * h + l];
                q[128 * h + l]      = (int8_t)(((a & 15) | ((hh & 3) << 4)) - 32);
                q[128 * h + l + 32] = (int8_t)(((c & 15) | (((hh >> 2) & 3) << 4)) - 32);
                q[128 * h + l + 64] = (int8_t)(((a >> 4) | (((hh >> 4) & 3) << 4)) - 32);
                q[128 * h + l + 96] = (int8_t)(((c >> 4) | (((hh >> 6) & 3) << 4)) - 32);
            }
        }
        for (int j = 0; j < 256; j++) w[j] = (float)q[j];
        for (int g = 0; g < 16; g++) ds[g] = d * (float)sc[g];
        for (int g = 0; g < 16; g += 2) {
            const float s0 = ds[g], s1 = ds[g + 1];
            for (int l = 0; l < 16; l++) {
                acc[l]      += (s0 * w[16 * g + l]) * x[16 * g + l];
                acc[l + 16] += (s1 * w[16 * g + 16 + l]) * x[16 * g + 16 + l];
            }
        }
    }
    return sum_acc(acc, 32);
}

/* The fused function for a weight type; NULL: dequantize the row, then dot(). */
static RowDotFn rowdot_for(uint32_t type) {
    switch (type) {
    case GGML_TYPE_Q8_0: return rowdot_q8_0;
    case GGML_TYPE_Q4_0: return rowdot_q4_0;
    case GGML_TYPE_Q4_K: return rowdot_q4_K;
    case GGML_TYPE_Q5_K: return rowdot_q5_K;
    case GGML_TYPE_Q6_K: return rowdot_q6_K;
    default: return NULL;
    }
}

/* out[r] = W[row0 + r] · x for r < n_rows: one matvec, or one expert's slab. */
typedef struct { const Tensor *w; int64_t row0; const float *x; float *out; int n_rows; } Matvec;
typedef struct { const Matvec *jobs; int n_jobs; int total; float **scratch; } MatvecBatch;

static void matvec_task(void *ctx, int ith, int nth) {
    const MatvecBatch *b = ctx;
    int from = (int)((int64_t)b->total * ith / nth), to = (int)((int64_t)b->total * (ith + 1) / nth);
    float *row = b->scratch[ith];
    int base = 0;
    for (int j = 0; j < b->n_jobs && from < to; j++) {
        const Matvec *m = &b->jobs[j];
        int lo = from - base, hi = to - base;
        if (lo < 0) lo = 0;
        if (hi > m->n_rows) hi = m->n_rows;
        const int n = (int)m->w->ne[0];
        const uint8_t *w0 = (const uint8_t *)m->w->data + (size_t)m->row0 * m->w->row_bytes;
        const RowDotFn fused = rowdot_for(m->w->type);
        const int64_t nb = n / gguf_type_get(m->w->type)->blck_size;
        for (int r = lo; r < hi; r++) {
            const uint8_t *wr = w0 + (size_t)r * m->w->row_bytes;
            if (fused) m->out[r] = fused(wr, m->x, nb);
            else if (m->w->type == GGML_TYPE_F32) m->out[r] = dot((const float *)wr, m->x, n);
            else { gguf_dequant_row(m->w->type, wr, row, n); m->out[r] = dot(row, m->x, n); }
        }
        base += m->n_rows;
    }
}

/* Runs several matvecs as one parallel pass, rows spread evenly over threads. */
static void matvec_batch(ThreadPool *pool, const Matvec *jobs, int n_jobs) {
    MatvecBatch b = {jobs, n_jobs, 0, pool->scratch};
    for (int j = 0; j < n_jobs; j++) b.total += jobs[j].n_rows;
    pool_run(pool, matvec_task, &b);
}

static void matvec(ThreadPool *pool, const Tensor *w, const float *x, float *out) {
    Matvec j = {w, 0, x, out, (int)w->ne[1]};
    matvec_batch(pool, &j, 1);
}

/* RMSNorm: x / sqrt(mean(x²) + eps) · w. Sum of squares in double, as ggml does. */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* Small weights (norms) are read through a dequantized copy, whatever their type. */
static const float *small_weight(const Tensor *t, float *buf) {
    if (t->type == GGML_TYPE_F32) return t->data;
    tensor_row(t, 0, buf);
    return buf;
}

/* NEOX RoPE: rotates element i with element i + d/2 (the two halves), not
 * adjacent pairs. The angle is built up as ggml does: θ_i = pos · base^(-2i/d). */
static void rope_neox(float *v, int d, int pos, float base) {
    const int half = d / 2;
    const float theta_scale = powf(base, -2.0f / d);
    float theta = (float)pos;
    for (int i = 0; i < half; i++) {
        float c = cosf(theta), s = sinf(theta);
        float x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x0 * s + x1 * c;
        theta *= theta_scale;
    }
}

static void softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    float sum = 0;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

typedef struct { CpuModel *cm; int layer, pos; } AttnCtx;

/* Causal attention for a range of heads; query head h reads kv head h / (n_head / n_head_kv). */
static void attention_task(void *ctx, int ith, int nth) {
    const AttnCtx *a = ctx;
    CpuModel *cm = a->cm;
    const Config *c = &cm->w->cfg;
    RunState *s = &cm->s;
    const int D = c->head_dim, kvdim = c->n_head_kv * D, group = c->n_head / c->n_head_kv;
    const float scale = 1.0f / sqrtf((float)D);
    const size_t loff = (size_t)a->layer * cm->kv.n_ctx * kvdim;
    for (int h = ith; h < c->n_head; h += nth) {
        const float *q = s->q + h * D;
        float *att = s->att + (size_t)h * cm->kv.n_ctx;
        const int kvh = h / group;
        for (int t = 0; t <= a->pos; t++) att[t] = dot(q, cm->kv.k + loff + (size_t)t * kvdim + kvh * D, D) * scale;
        softmax(att, a->pos + 1);
        float *out = s->xb2 + h * D;
        memset(out, 0, D * sizeof(float));
        for (int t = 0; t <= a->pos; t++) {
            const float *v = cm->kv.v + loff + (size_t)t * kvdim + kvh * D;
            const float w = att[t];
            for (int i = 0; i < D; i++) out[i] += w * v[i];
        }
    }
}

/* Router: softmax over all experts (in place), the k most probable, renormalized
 * to sum 1. Ties go to the lower expert id. */
static void route(float *probs, int n_expert, int k, int *sel, float *sel_w) {
    softmax(probs, n_expert);
    float sum = 0;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < n_expert; e++) {
            int taken = 0;
            for (int i = 0; i < j; i++) if (sel[i] == e) { taken = 1; break; }
            if (!taken && (best < 0 || probs[e] > probs[best])) best = e;
        }
        sel[j] = best;
        sel_w[j] = probs[best];
        sum += probs[best];
    }
    for (int j = 0; j < k; j++) sel_w[j] /= sum;
}

/* One token through the model, exactly as DESIGN.md defines it. Leaves the
 * logits in s->logits when want_logits (the output head is the costliest
 * matvec, so prompt positions skip it unless someone asked for them). */
static void cpu_forward(CpuModel *cm, int token, int pos, int want_logits) {
    const Weights *w = cm->w;
    const Config *c = &w->cfg;
    RunState *s = &cm->s;
    ThreadPool *pool = cm->pool;
    const int E = c->n_embd, D = c->head_dim, kvdim = c->n_head_kv * D, K = c->n_expert_used;
    float *wbuf = pool->scratch[0];   /* for small non-f32 weights; matvecs use it only inside pool_run */
    float *normw = xmalloc((size_t)(E > D ? E : D) * sizeof(float));

    tensor_row(&w->token_embd, token, s->x);

    for (int il = 0; il < c->n_layer; il++) {
        const Layer *L = &w->layers[il];

        /* attention */
        rmsnorm(s->xb, s->x, small_weight(&L->attn_norm, normw), E, c->rms_eps);
        Matvec qkv[3] = {{&L->attn_q, 0, s->xb, s->q, c->n_head * D},
                         {&L->attn_k, 0, s->xb, s->k, kvdim},
                         {&L->attn_v, 0, s->xb, s->v, kvdim}};
        matvec_batch(pool, qkv, 3);
        const float *qn = small_weight(&L->attn_q_norm, wbuf);
        for (int h = 0; h < c->n_head; h++) {   /* per-head RMSNorm, then RoPE */
            rmsnorm(s->q + h * D, s->q + h * D, qn, D, c->rms_eps);
            rope_neox(s->q + h * D, D, pos, c->rope_theta);
        }
        const float *kn = small_weight(&L->attn_k_norm, wbuf);
        for (int h = 0; h < c->n_head_kv; h++) {
            rmsnorm(s->k + h * D, s->k + h * D, kn, D, c->rms_eps);
            rope_neox(s->k + h * D, D, pos, c->rope_theta);
        }
        size_t at = ((size_t)il * cm->kv.n_ctx + pos) * kvdim;
        memcpy(cm->kv.k + at, s->k, kvdim * sizeof(float));
        memcpy(cm->kv.v + at, s->v, kvdim * sizeof(float));
        AttnCtx actx = {cm, il, pos};
        pool_run(pool, attention_task, &actx);
        matvec(pool, &L->attn_output, s->xb2, s->xb);
        for (int i = 0; i < E; i++) s->x[i] += s->xb[i];

        /* mixture of experts */
        rmsnorm(s->xb, s->x, small_weight(&L->ffn_norm, normw), E, c->rms_eps);
        matvec(pool, &L->ffn_gate_inp, s->xb, s->router);
        route(s->router, c->n_expert, K, s->sel, s->sel_w);
        memcpy(s->rec_probs + (size_t)il * c->n_expert, s->router, c->n_expert * sizeof(float));
        memcpy(s->rec_experts + (size_t)il * K, s->sel, K * sizeof(int));
        const int F = L->n_ff;
        Matvec gu[2 * 64], dn[64];
        for (int done = 0; done < K; done += 64) {   /* k ≤ 64 per pass keeps the job lists on the stack */
            int nk = K - done < 64 ? K - done : 64;
            for (int j = 0; j < nk; j++) {
                int e = s->sel[done + j];
                gu[2 * j] = (Matvec){&L->ffn_gate_exps, (int64_t)e * F, s->xb, s->gate + (size_t)(done + j) * F, F};
                gu[2 * j + 1] = (Matvec){&L->ffn_up_exps, (int64_t)e * F, s->xb, s->up + (size_t)(done + j) * F, F};
            }
            matvec_batch(pool, gu, 2 * nk);
            for (int j = 0; j < nk; j++) {
                float *g = s->gate + (size_t)(done + j) * F;
                const float *u = s->up + (size_t)(done + j) * F;
                for (int i = 0; i < F; i++) g[i] = silu(g[i]) * u[i];
                int e = s->sel[done + j];
                dn[j] = (Matvec){&L->ffn_down_exps, (int64_t)e * E, g, s->down + (size_t)(done + j) * E, E};
            }
            matvec_batch(pool, dn, nk);
        }
        for (int j = 0; j < K; j++) {
            const float *d = s->down + (size_t)j * E;
            const float wj = s->sel_w[j];
            for (int i = 0; i < E; i++) s->x[i] += wj * d[i];
        }
    }

    if (want_logits) {
        rmsnorm(s->xb, s->x, small_weight(&w->output_norm, normw), E, c->rms_eps);
        matvec(pool, &w->output, s->xb, s->logits);
    }
    free(normw);
}

/* ============================================================================
 * 6. Generation loop: one engine over either backend
 * ========================================================================== */

typedef struct {
    const Model *model;
    const Tokenizer *tok;
    int use_gpu;
    CpuModel cpu;
    GpuModel *gpu;
    int n_ctx;
    int pos;          /* positions already in the KV cache */
    int pending;      /* a sampled token not yet evaluated (-1: none) */
    int *history;     /* stb_ds: every token in the context, for the repeat penalty */
    float *logits;    /* [n_vocab]: the last evaluated position's logits */
    float *dump_buf;  /* GPU rows when every position's logits are wanted */
} Engine;

static void engine_init(Engine *e, const Model *m, const Tokenizer *t, int use_gpu, int n_ctx, int n_threads) {
    memset(e, 0, sizeof *e);
    e->model = m; e->tok = t; e->use_gpu = use_gpu; e->n_ctx = n_ctx; e->pending = -1;
    e->logits = xcalloc(m->w.cfg.n_vocab, sizeof(float));
    if (use_gpu) {
        char err[512];
        e->gpu = gpu_load(&m->w, n_ctx, isatty(STDERR_FILENO), err, sizeof err);
        if (!e->gpu) die(EXIT_RUNTIME, "GPU: %s", err);
    } else {
        cpu_model_init(&e->cpu, &m->w, n_ctx, n_threads);
    }
}

static void engine_free(Engine *e) {
    if (e->gpu) gpu_free(e->gpu);
    else cpu_model_free(&e->cpu);
    arrfree(e->history);
    free(e->logits);
    free(e->dump_buf);
}

static void engine_reset(Engine *e) { e->pos = 0; e->pending = -1; arrsetlen(e->history, 0); }

static void write_rows(FILE *f, const float *rows, size_t n_floats) {
    if (f && fwrite(rows, sizeof(float), n_floats, f) != n_floats) die(EXIT_RUNTIME, "writing --dump-logits: %s", strerror(errno));
}

/* Evaluates n tokens at the current position. The last position's logits land
 * in e->logits when want_logits; every position's go to dump when it is open. */
static void engine_eval(Engine *e, const int *toks, int n, int want_logits, FILE *dump) {
    const int V = e->model->w.cfg.n_vocab;
    if (n <= 0) return;
    if (e->pos + n > e->n_ctx) die(EXIT_RUNTIME, "internal: evaluating past the context (%d + %d > %d)", e->pos, n, e->n_ctx);
    if (e->use_gpu) {
        char err[512];
        int rc;
        if (dump) {
            e->dump_buf = realloc(e->dump_buf, (size_t)n * V * sizeof(float));
            if (!e->dump_buf) die(EXIT_RUNTIME, "out of memory for %d rows of logits", n);
            rc = gpu_eval(e->gpu, toks, n, e->pos, e->dump_buf, 1, NULL, NULL, err, sizeof err);
            if (rc == 0) { write_rows(dump, e->dump_buf, (size_t)n * V); memcpy(e->logits, e->dump_buf + (size_t)(n - 1) * V, V * sizeof(float)); }
        } else {
            rc = gpu_eval(e->gpu, toks, n, e->pos, want_logits ? e->logits : NULL, 0, NULL, NULL, err, sizeof err);
        }
        if (rc != 0) die(EXIT_RUNTIME, "GPU: %s", err);
    } else {
        for (int i = 0; i < n; i++) {
            int last = i == n - 1;
            cpu_forward(&e->cpu, toks[i], e->pos + i, dump || (last && want_logits));
            write_rows(dump, e->cpu.s.logits, V);
        }
        if (want_logits) memcpy(e->logits, e->cpu.s.logits, V * sizeof(float));
    }
    for (int i = 0; i < n; i++) arrput(e->history, toks[i]);
    e->pos += n;
}

typedef struct {
    int n_predict;      /* -1: until end of generation or context */
    Sampler sampler;
    FILE *dump;         /* --dump-logits */
    int stream;         /* print the reply to stdout as it comes */
} GenParams;

typedef struct {
    int *ids;           /* stb_ds: generated ids (including a final <|im_end|>) */
    char *text;         /* stb_ds bytes, NUL-terminated at the end */
    int n_prompt;
    double t_prompt, t_gen;
    int n_eval_gen;     /* generated tokens that were evaluated */
    const char *stop;   /* "eos", "length", "context", "interrupt" */
} GenResult;

static void gen_result_free(GenResult *r) { arrfree(r->ids); arrfree(r->text); memset(r, 0, sizeof *r); }

/* Evaluates the prompt, then samples until an end token, -n tokens, the end
 * of the context, or Ctrl-C. Returns 0, or -1 (message printed) when the prompt
 * does not fit in the context. */
static int generate(Engine *e, const int *prompt, int n_prompt, GenParams *gp, GenResult *r) {
    const Tokenizer *t = e->tok;
    const int V = e->model->w.cfg.n_vocab;
    memset(r, 0, sizeof *r);
    r->n_prompt = n_prompt;
    r->stop = "length";
    if (n_prompt <= 0) { fprintf(stderr, "error: the prompt is empty (0 tokens)\n"); return -1; }
    if (e->pos + n_prompt > e->n_ctx) {
        fprintf(stderr, "error: the prompt is %d tokens but the context has room for %d more (-c %d%s); use a larger -c or a shorter prompt\n",
                n_prompt, e->n_ctx - e->pos, e->n_ctx, e->pos ? ", part of it taken by earlier turns" : "");
        return -1;
    }
    TextStream ts = {.to_stdout = gp->stream};
    double t0 = now_sec();
    engine_eval(e, prompt, n_prompt, gp->n_predict != 0, gp->dump);
    r->t_prompt = now_sec() - t0;
    t0 = now_sec();
    char *piece = xmalloc(4096 * 4 + 16);
    int greedy_gpu = e->use_gpu && gp->sampler.temp <= 0 && gp->sampler.repeat_penalty == 1.0f && !gp->dump;
    int queued = 0;   /* greedy_gpu: the step for the next token is queued already (fed on the GPU) */
    int next = -1;
    float *work = xmalloc(V * sizeof(float));
    for (int i = 0; gp->n_predict < 0 || i < gp->n_predict; i++) {
        if (g_interrupted) { r->stop = "interrupt"; break; }
        if (next < 0) {   /* from the logits of the last evaluated position */
            memcpy(work, e->logits, V * sizeof(float));
            next = sample(&gp->sampler, work, V, e->history, (int)arrlen(e->history));
        }
        arrput(r->ids, next);
        e->pending = next;
        if (next == t->eos || next == t->eot) { r->stop = "eos"; break; }
        int np = token_piece(t, next, piece, 0);
        stream_push(&ts, piece, np);
        if (gp->n_predict >= 0 && i + 1 >= gp->n_predict) { r->stop = "length"; break; }
        if (e->pos >= e->n_ctx) {
            r->stop = "context";
            fprintf(stderr, "\nnote: the context is full (%d tokens, -c %d); stopping\n", e->pos, e->n_ctx);
            break;
        }
        int tok = next;
        next = -1;
        e->pending = -1;
        if (greedy_gpu) {
            /* the step after this one is queued before this one's token is read, fed on the
             * GPU from its argmax, whenever the loop may get that far (a step it does not
             * use is dropped: its cache row is past e->pos, rewritten later) */
            char err[512];
            if (!queued && gpu_decode_queue(e->gpu, tok, e->pos, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
            queued = (gp->n_predict < 0 || i + 2 < gp->n_predict) && e->pos + 1 < e->n_ctx;
            if (queued && gpu_decode_queue(e->gpu, -1, 0, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
            if (gpu_decode_next(e->gpu, &next, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
            arrput(e->history, tok);
            e->pos++;
        } else {
            engine_eval(e, &tok, 1, 1, gp->dump);
        }
        r->n_eval_gen++;
    }
    if (queued) {
        char err[512];
        if (gpu_decode_drop(e->gpu, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
    }
    r->t_gen = now_sec() - t0;
    stream_finish(&ts);
    r->text = ts.collected;
    arrput(r->text, 0);
    arrsetlen(r->text, arrlen(r->text) - 1);
    free(piece);
    free(work);
    return 0;
}

/* --- JSON output ---------------------------------------------------------- */
static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (ch < 0x20) fprintf(f, "\\u%04x", ch);
            else {
                int k = utf8_valid_seq((const uint8_t *)s + i, n - i);
                if (k == 0) fputs("\\ufffd", f);   /* JSON must be valid UTF-8 */
                else { fwrite(s + i, 1, k, f); i += k - 1; }
            }
        }
    }
    fputc('"', f);
}

static void json_ids(FILE *f, const int *ids, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, i ? ",%d" : "%d", ids[i]);
    fputc(']', f);
}

static void print_result_json(const Engine *e, const int *prompt, const GenResult *r) {
    FILE *f = stdout;
    fputs("{\"text\":", f);
    json_str(f, r->text, arrlen(r->text));
    fputs(",\"prompt_ids\":", f);
    json_ids(f, prompt, r->n_prompt);
    fputs(",\"generated_ids\":", f);
    json_ids(f, r->ids, (int)arrlen(r->ids));
    fprintf(f, ",\"stop\":\"%s\",\"backend\":\"%s\",\"timings\":{\"prompt_ms\":%.3f,\"prompt_tok_s\":%.3f,\"gen_ms\":%.3f,\"gen_tok_s\":%.3f}}\n",
            r->stop, e->use_gpu ? "gpu" : "cpu", r->t_prompt * 1e3, r->t_prompt > 0 ? r->n_prompt / r->t_prompt : 0,
            r->t_gen * 1e3, r->t_gen > 0 ? r->n_eval_gen / r->t_gen : 0);
    out_flush();
}

static void print_timings(const GenResult *r) {
    fprintf(stderr, "\n[prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.1f tok/s | stop: %s]\n", r->n_prompt,
            r->t_prompt > 0 ? r->n_prompt / r->t_prompt : 0, (int)arrlen(r->ids),
            r->t_gen > 0 ? r->n_eval_gen / r->t_gen : 0, r->stop);
}

/* ============================================================================
 * 7. Modes
 * ========================================================================== */

typedef struct {
    const char *model_path;
    const char *prompt;          /* -p */
    const char *prompt_file;     /* -f */
    const char *prompt_ids;      /* --prompt-ids */
    const char *system;          /* -sys */
    const char *dump_logits;
    int n_predict, n_predict_set;
    int n_ctx, n_threads;
    uint64_t seed;
    float temp, top_p, min_p, repeat_penalty;
    int top_k, repeat_last_n;
    int temp_set, top_p_set, top_k_set;
    int interactive, raw, think, parse_special;
    int cpu, gpu, parity, bench, json, tokenize_only, batch_lines;
    /* --parity thresholds */
    double par_mean_cos, par_min_cos, par_top1, par_experts, par_tie_logit, par_tie_router, par_router_err;
    int par_free_routing;
    /* --bench */
    int bench_prompt, bench_gen, bench_depth, bench_reps;
} Options;

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) die(EXIT_USAGE, "cannot open prompt file '%s': %s", path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len + 65536 + 1 > cap) { cap = (len + 65536 + 1) * 2; buf = realloc(buf, cap); if (!buf) die(EXIT_RUNTIME, "out of memory reading '%s'", path); }
        size_t k = fread(buf + len, 1, 65536, f);
        len += k;
        if (k == 0) break;
    }
    if (ferror(f)) die(EXIT_USAGE, "reading '%s': %s", path, strerror(errno));
    fclose(f);
    buf[len] = 0;
    *n = len;
    return buf;
}

static char *read_stream(FILE *f, size_t *n) {
    char *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len + 65536 + 1 > cap) { cap = (len + 65536 + 1) * 2; buf = realloc(buf, cap); if (!buf) die(EXIT_RUNTIME, "out of memory reading stdin"); }
        size_t k = fread(buf + len, 1, 65536, f);
        len += k;
        if (k == 0) break;
    }
    buf[len] = 0;
    *n = len;
    return buf;
}

static int *parse_id_list(const char *s, int n_vocab) {
    int *ids = NULL;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno) die(EXIT_USAGE, "--prompt-ids: expected a comma-separated list of token ids, found '%.20s'", p);
        if (v < 0 || v >= n_vocab) die(EXIT_USAGE, "--prompt-ids: token id %ld is outside the vocabulary [0, %d)", v, n_vocab);
        arrput(ids, (int)v);
        p = end;
        if (*p && *p != ',' && *p != ' ' && *p != '\n' && *p != '\t') die(EXIT_USAGE, "--prompt-ids: unexpected '%c' after %ld", *p, v);
    }
    if (arrlen(ids) == 0) die(EXIT_USAGE, "--prompt-ids: no token ids in '%.20s'", s);
    return ids;
}

/* The tokens of one user turn: the template around the text, or the text alone with --raw. */
static int *build_prompt(const Options *o, const Tokenizer *t, const char *text, size_t n, int with_system) {
    if (o->raw) return tokenize(t, text, n, o->parse_special);
    int *ids = NULL;
    if (with_system && o->system) chat_append(t, &ids, "system", o->system, strlen(o->system), o->parse_special);
    chat_append(t, &ids, "user", text, n, o->parse_special);
    chat_open_assistant(t, &ids, o->think);
    return ids;
}

static Sampler make_sampler(const Options *o) {
    Sampler s = {o->temp, o->top_k, o->top_p, o->min_p, o->repeat_penalty, o->repeat_last_n, o->seed * 2654435761ULL + 0x9E3779B97F4A7C15ULL};
    if (s.rng == 0) s.rng = 1;
    return s;
}

static FILE *open_dump(const Options *o) {
    if (!o->dump_logits) return NULL;
    FILE *f = fopen(o->dump_logits, "wb");
    if (!f) die(EXIT_USAGE, "cannot write --dump-logits file '%s': %s", o->dump_logits, strerror(errno));
    return f;
}

static void close_dump(FILE *f) {
    if (f && fclose(f) != 0) die(EXIT_RUNTIME, "writing --dump-logits: %s", strerror(errno));
}

/* One prompt in, one reply out (the default mode). */
static int run_once(const Options *o, Engine *e, const int *prompt, int n_prompt) {
    GenParams gp = {o->n_predict, make_sampler(o), open_dump(o), !o->json};
    GenResult r;
    if (generate(e, prompt, n_prompt, &gp, &r) != 0) { close_dump(gp.dump); return EXIT_RUNTIME; }
    close_dump(gp.dump);
    if (o->json) print_result_json(e, prompt, &r);
    else { if (arrlen(r.text) > 0) out_str("\n"); out_flush(); print_timings(&r); }
    int interrupted = strcmp(r.stop, "interrupt") == 0;
    gen_result_free(&r);
    return interrupted ? EXIT_INTERRUPT : EXIT_OK;
}

/* --batch-lines: every stdin line is its own prompt with a fresh context. */
static int run_batch_lines(const Options *o, Engine *e, const Tokenizer *t) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = EXIT_OK;
    GenParams gp = {o->n_predict, make_sampler(o), open_dump(o), !o->json};
    while ((n = getline(&line, &cap, stdin)) >= 0 && !g_interrupted) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        int *prompt = build_prompt(o, t, line, (size_t)n, 1);
        engine_reset(e);
        GenResult r;
        if (generate(e, prompt, (int)arrlen(prompt), &gp, &r) != 0) rc = EXIT_RUNTIME;
        else {
            if (o->json) print_result_json(e, prompt, &r);
            else { out_str("\n"); out_flush(); }
            gen_result_free(&r);
        }
        arrfree(prompt);
    }
    free(line);
    close_dump(gp.dump);
    return g_interrupted ? EXIT_INTERRUPT : rc;
}

/* -i: a multi-turn chat. The KV cache is kept between turns, so each turn
 * evaluates only its own tokens. The previous reply's <think> block stays in the
 * cache as the model produced it (Qwen's template would drop it from the
 * history; dropping it here would mean re-evaluating the reply: see README). */
static int run_interactive(const Options *o, Engine *e, const Tokenizer *t) {
    int tty = isatty(STDIN_FILENO);
    fprintf(stderr, "interactive chat: type a message and press Enter; Ctrl-C stops a reply; /exit or Ctrl-D quits\n");
    char *line = NULL;
    size_t cap = 0;
    int first = 1;
    GenParams gp = {o->n_predict, make_sampler(o), NULL, 1};
    for (;;) {
        if (tty) { fprintf(stderr, "\n> "); fflush(stderr); }
        g_interrupted = 0;
        errno = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;   /* EOF, or Ctrl-C at the prompt */
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) break;
        if (n == 0) continue;
        int *turn = NULL;
        if (!first) {
            /* close the previous reply: its last sampled token was never evaluated */
            if (e->pending >= 0 && e->pending != t->im_end) arrput(turn, e->pending);
            arrput(turn, t->im_end);
            int *nl = tokenize(t, "\n", 1, 0);
            for (ptrdiff_t i = 0; i < arrlen(nl); i++) arrput(turn, nl[i]);
            arrfree(nl);
        }
        int *body = build_prompt(o, t, line, (size_t)n, first);
        for (ptrdiff_t i = 0; i < arrlen(body); i++) arrput(turn, body[i]);
        arrfree(body);
        GenResult r;
        int saved_pos = e->pos, saved_pending = e->pending;
        if (generate(e, turn, (int)arrlen(turn), &gp, &r) == 0) {
            first = 0;
            out_str("\n");
            out_flush();
            if (strcmp(r.stop, "interrupt") == 0) fprintf(stderr, "[reply stopped]\n");
            if (strcmp(r.stop, "context") == 0) fprintf(stderr, "[the context is full: start a new chat]\n");
            gen_result_free(&r);
        } else {
            e->pos = saved_pos; e->pending = saved_pending;
        }
        arrfree(turn);
    }
    free(line);
    return EXIT_OK;
}

static int run_tokenize(const Options *o, const Tokenizer *t, const char *text, size_t n) {
    int *ids = tokenize(t, text, n, o->parse_special);
    char buf[32];
    out_str("[");
    for (ptrdiff_t i = 0; i < arrlen(ids); i++) {
        snprintf(buf, sizeof buf, i ? ", %d" : "%d", ids[i]);
        out_str(buf);
    }
    out_str("]\n");
    out_flush();
    arrfree(ids);
    return EXIT_OK;
}

/* --- --parity: the CPU reference and the GPU, teacher-forced on the same tokens */
static double cosine(const float *a, const float *b, int n, double *max_abs) {
    double ab = 0, aa = 0, bb = 0, mx = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i];
        double d = fabs((double)a[i] - b[i]);
        if (d > mx || d != d) mx = d;
    }
    *max_abs = mx;
    if (aa == 0 || bb == 0) return aa == bb ? 1.0 : 0.0;
    return ab / sqrt(aa * bb);
}

static int in_set(const int *set, int k, int e) {
    for (int i = 0; i < k; i++) if (set[i] == e) return 1;
    return 0;
}

static int same_set(const int *a, const int *b, int k) {
    for (int i = 0; i < k; i++) if (!in_set(b, k, a[i])) return 0;
    return 1;
}

/* The GPU router's largest probability error on its own choice gi (probabilities gp),
 * against the CPU's probabilities over all experts cp. */
static double router_err(const float *cp, int ne, const int *gi, const float *gp, int k) {
    double err = 0;
    for (int i = 0; i < k; i++) {
        const double d = gi[i] >= 0 && gi[i] < ne ? fabs((double)gp[i] - cp[gi[i]]) : 1.0;
        if (d > err || d != d) err = d;
    }
    return err;
}

/* How far apart, in the CPU's probabilities, the experts of a swap lie: the CPU's
 * weakest expert that the GPU left out minus the CPU's strongest that it took instead. */
static double router_gap(const float *cp, int ne, const int *ci, const int *gi, int k) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < k; i++) {
        if (!in_set(gi, k, ci[i]) && cp[ci[i]] < lo) lo = cp[ci[i]];
        if (!in_set(ci, k, gi[i])) {
            const double v = gi[i] >= 0 && gi[i] < ne ? cp[gi[i]] : -INFINITY;   /* an id out of range is no tie */
            if (v > hi) hi = v;
        }
    }
    return lo - hi;
}

static int run_parity(const Options *o, const Model *m, const Tokenizer *t, const int *prompt, int n_prompt) {
    const Config *c = &m->w.cfg;
    const int V = c->n_vocab, NL = c->n_layer, K = c->n_expert_used, NE = c->n_expert;
    int n_gen = o->n_predict_set ? o->n_predict : 16;
    if (n_gen < 0) n_gen = 16;
    if (n_prompt <= 0) die(EXIT_USAGE, "--parity: the prompt is empty");
    if (n_prompt + n_gen > o->n_ctx) die(EXIT_RUNTIME, "--parity: %d prompt + %d generated tokens do not fit in -c %d", n_prompt, n_gen, o->n_ctx);
    if (gpu_device_count() == 0) die(EXIT_RUNTIME, "--parity needs a CUDA device, and none was found");

    /* CPU: the prompt, then n_gen greedy tokens; every position's logits and experts kept */
    int P = n_prompt + (n_gen > 0 ? n_gen - 1 : 0);   /* evaluated positions */
    int *seq = xmalloc((size_t)(n_prompt + n_gen + 1) * sizeof(int));
    memcpy(seq, prompt, n_prompt * sizeof(int));
    float *cl = xmalloc((size_t)P * V * sizeof(float));
    int *ce = xmalloc((size_t)P * NL * K * sizeof(int));
    float *cprob = xmalloc((size_t)P * NL * NE * sizeof(float));
    CpuModel cm;
    cpu_model_init(&cm, &m->w, o->n_ctx, o->n_threads);
    fprintf(stderr, "parity: CPU reference over %d positions (%d prompt + %d generated)...\n", P, n_prompt, n_gen > 0 ? n_gen - 1 : 0);
    for (int p = 0; p < P; p++) {
        cpu_forward(&cm, seq[p], p, 1);
        memcpy(cl + (size_t)p * V, cm.s.logits, V * sizeof(float));
        memcpy(ce + (size_t)p * NL * K, cm.s.rec_experts, (size_t)NL * K * sizeof(int));
        memcpy(cprob + (size_t)p * NL * NE, cm.s.rec_probs, (size_t)NL * NE * sizeof(float));
        if (p >= n_prompt - 1 && p + 1 < n_prompt + n_gen) {
            if (p + 1 >= n_prompt) seq[p + 1] = argmax(cm.s.logits, V);
        }
    }
    cpu_model_free(&cm);

    /* GPU: the prompt as one batch (the prefill path), then one token at a time (the decode path) */
    char err[512];
    GpuModel *g = gpu_load(&m->w, o->n_ctx, isatty(STDERR_FILENO), err, sizeof err);
    if (!g) die(EXIT_RUNTIME, "GPU: %s", err);
    GpuInfo info = {0};
    gpu_info(g, &info);
    float *gl = xmalloc((size_t)P * V * sizeof(float));
    int *ge = xmalloc((size_t)P * NL * K * sizeof(int));
    float *gp = xmalloc((size_t)P * NL * K * sizeof(float));
    /* Unless --parity-free-routing, the GPU computes with the CPU's expert sets
     * (its own router's choice is still what gets compared): one flip at a
     * near-tie would otherwise change that position's hidden state, and through
     * the KV cache every later one, so no later number would measure the kernels. */
    const int forced = !o->par_free_routing;
    if (forced && gpu_force_experts(g, ce, n_prompt, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
    if (gpu_eval(g, seq, n_prompt, 0, gl, 1, ge, gp, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
    for (int p = n_prompt; p < P; p++) {
        if (forced && gpu_force_experts(g, ce + (size_t)p * NL * K, 1, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
        if (gpu_eval(g, seq + p, 1, p, gl + (size_t)p * V, 1, ge + (size_t)p * NL * K, gp + (size_t)p * NL * K, err, sizeof err) != 0)
            die(EXIT_RUNTIME, "GPU: %s", err);
    }
    gpu_free(g);

    /* compare */
    double sum_cos = 0, min_cos = 1;
    int top1_agree = 0, top1_ties = 0, exp_agree = 0, exp_ties = 0, exp_total = P * NL;
    double worst_abs = 0, worst_rerr = 0;
    FILE *J = o->json ? stdout : NULL;
    if (J) fprintf(J, "{\"card\":\"%s\",\"positions\":[", info.name);
    fprintf(stderr, "\n%5s %8s %12s %10s %8s %8s %8s\n", "pos", "token", "cosine", "max|d|", "top1cpu", "top1gpu", "experts");
    for (int p = 0; p < P; p++) {
        const float *a = cl + (size_t)p * V, *b = gl + (size_t)p * V;
        double mx;
        double cs = cosine(a, b, V, &mx);
        if (cs != cs) cs = 0;
        sum_cos += cs;
        if (cs < min_cos) min_cos = cs;
        if (mx > worst_abs) worst_abs = mx;
        int ta = argmax(a, V), tb = argmax(b, V);
        /* a flip is a near-tie when the CPU's own gap between the two tokens is
         * below --parity-tie-logit or below the largest logit error at that
         * position (which the cosine thresholds bound): the measured rounding
         * decides it, not a bug. Counted and shown apart. */
        const double gap = (double)a[ta] - a[tb];
        int tie = ta != tb && (gap < o->par_tie_logit || gap < mx);
        if (ta == tb) top1_agree++;
        else if (tie) top1_ties++;
        /* an expert-set flip is a near-tie when the CPU's probability gap between the
         * swapped experts is below --parity-tie-router or below twice the GPU router's
         * measured probability error there (each of the two can move by about that
         * much); that error has its own threshold, so a broken router cannot pass as
         * a string of near ties */
        int agree_layers = 0;
        char why[256] = "";
        size_t wl = 0;
        for (int l = 0; l < NL; l++) {
            const size_t pl = (size_t)p * NL + l;
            const float *cp = cprob + pl * NE;
            const int *ci = ce + pl * K, *gi = ge + pl * K;
            const double rerr = router_err(cp, NE, gi, gp + pl * K, K);
            if (rerr > worst_rerr || rerr != rerr) worst_rerr = rerr;
            if (same_set(ci, gi, K)) { agree_layers++; continue; }
            const double rgap = router_gap(cp, NE, ci, gi, K);
            const int rtie = rgap < o->par_tie_router || rgap < 2 * rerr;
            if (rtie) exp_ties++;
            if (wl < sizeof why - 64)
                wl += snprintf(why + wl, sizeof why - wl, "  L%d %s (CPU gap %.3g, router err %.3g)", l, rtie ? "experts near-tie" : "EXPERTS DIFFER", rgap, rerr);
        }
        exp_agree += agree_layers;
        if (P <= 64 || p < 8 || p >= P - 8 || ta != tb || agree_layers != NL) {
            fprintf(stderr, "%5d %8d %12.7f %10.3g %8d %8d %5d/%d", p, seq[p], cs, mx, ta, tb, agree_layers, NL);
            if (ta != tb) fprintf(stderr, "  %s (CPU gap %.3g)", tie ? "top1 near-tie" : "TOP1 DIFFERS", gap);
            fprintf(stderr, "%s\n", why);
        }
        if (J) fprintf(J, "%s{\"pos\":%d,\"token\":%d,\"cosine\":%.9f,\"max_abs\":%.6g,\"top1_cpu\":%d,\"top1_gpu\":%d,\"top1_near_tie\":%s,\"expert_layers_agree\":%d}",
                       p ? "," : "", p, seq[p], cs, mx, ta, tb, tie ? "true" : "false", agree_layers);
    }
    /* the thresholds apply to real disagreements; near-tie flips are reported beside them */
    double mean_cos = sum_cos / P, top1 = (double)(top1_agree + top1_ties) / P, exps = (double)(exp_agree + exp_ties) / exp_total;
    const int rerr_ok = worst_rerr <= o->par_router_err;
    int pass = mean_cos >= o->par_mean_cos && min_cos >= o->par_min_cos && top1 >= o->par_top1 && exps >= o->par_experts && rerr_ok;
    fprintf(stderr, "\nparity summary (%s, %d positions, %d layers, k=%d, %s)\n", info.name, P, NL, K,
            forced ? "GPU computes with the CPU's expert sets; its router's own choice is compared" : "GPU on its own routing");
    fprintf(stderr, "  GPU decode      %s\n", info.decode);
    fprintf(stderr, "  GPU prefill     %s\n", info.prefill);
    fprintf(stderr, "  mean cosine     %.7f   (threshold >= %g)%s\n", mean_cos, o->par_mean_cos, mean_cos >= o->par_mean_cos ? "" : "  FAIL");
    fprintf(stderr, "  min cosine      %.7f   (threshold >= %g)%s\n", min_cos, o->par_min_cos, min_cos >= o->par_min_cos ? "" : "  FAIL");
    fprintf(stderr, "  max |delta|     %.4g\n", worst_abs);
    fprintf(stderr, "  top-1 agreement %.2f%% not counting %d near-tie flip%s (CPU gap < max(%g, max|d|)); %d/%d identical (threshold >= %g%%)%s\n",
            100 * top1, top1_ties, top1_ties == 1 ? "" : "s", o->par_tie_logit, top1_agree, P, 100 * o->par_top1, top1 >= o->par_top1 ? "" : "  FAIL");
    fprintf(stderr, "  router error    %.4g   (largest |p_gpu - p_cpu| of a chosen expert; threshold <= %g)%s\n", worst_rerr, o->par_router_err,
            rerr_ok ? "" : "  FAIL");
    fprintf(stderr, "  expert sets     %.2f%% not counting %d near-tie flip%s (CPU gap < max(%g, 2 x router error)); %d/%d identical (threshold >= %g%%)%s\n",
            100 * exps, exp_ties, exp_ties == 1 ? "" : "s", o->par_tie_router, exp_agree, exp_total, 100 * o->par_experts,
            exps >= o->par_experts ? "" : "  FAIL");
    fprintf(stderr, "  result          %s\n", pass ? "PASS" : "FAIL");
    if (J) {
        fprintf(J, "],\"summary\":{\"positions\":%d,\"expert_forced\":%s,\"mean_cosine\":%.9f,\"min_cosine\":%.9f,\"max_abs\":%.6g,"
                   "\"top1_agreement\":%.6f,\"top1_identical\":%d,\"top1_near_tie_flips\":%d,"
                   "\"expert_agreement\":%.6f,\"expert_sets_identical\":%d,\"expert_sets_total\":%d,\"expert_near_tie_flips\":%d,"
                   "\"router_error\":%.6g,\"pass\":%s},"
                   "\"thresholds\":{\"mean_cosine\":%g,\"min_cosine\":%g,\"top1\":%g,\"experts\":%g,\"router_error\":%g}}\n",
                P, forced ? "true" : "false", mean_cos, min_cos, worst_abs, top1, top1_agree, top1_ties, exps, exp_agree, exp_total, exp_ties,
                worst_rerr, pass ? "true" : "false",
                o->par_mean_cos, o->par_min_cos, o->par_top1, o->par_experts, o->par_router_err);
        out_flush();
    }
    free(seq); free(cl); free(ce); free(cprob); free(gl); free(ge); free(gp);
    return pass ? EXIT_OK : EXIT_PARITY;
}

/* --- --bench: llama-bench style prefill and decode throughput ---------------- */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Bytes one decode step reads: every non-expert weight, k of n_expert expert
 * slabs per layer, one embedding row, and the f16 KV cache up to ctx. */
static double decode_bytes(const Weights *w, double ctx) {
    const Config *c = &w->cfg;
    double b = (double)w->output.nbytes + w->output_norm.nbytes + w->token_embd.row_bytes;
    for (int il = 0; il < c->n_layer; il++) {
        const Layer *L = &w->layers[il];
        b += L->attn_norm.nbytes + L->attn_q.nbytes + L->attn_k.nbytes + L->attn_v.nbytes + L->attn_q_norm.nbytes +
             L->attn_k_norm.nbytes + L->attn_output.nbytes + L->ffn_norm.nbytes + L->ffn_gate_inp.nbytes;
        b += (double)c->n_expert_used / c->n_expert * (L->ffn_gate_exps.nbytes + L->ffn_up_exps.nbytes + L->ffn_down_exps.nbytes);
    }
    b += 2.0 * c->n_layer * ctx * c->n_head_kv * c->head_dim * 2.0;
    return b;
}

static void stats(double *v, int n, double *median, double *lo, double *hi) {
    qsort(v, n, sizeof *v, cmp_double);
    *median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    *lo = v[0]; *hi = v[n - 1];
}

static int run_bench(const Options *o, const Model *m, Engine *e) {
    const Config *c = &m->w.cfg;
    const int np = o->bench_prompt, ng = o->bench_gen, depth = o->bench_depth, reps = o->bench_reps;
    if (depth + (np > ng ? np : ng) > e->n_ctx)
        die(EXIT_USAGE, "--bench: depth %d + %d tokens do not fit in -c %d", depth, np > ng ? np : ng, e->n_ctx);
    uint64_t rng = o->seed + 1;
    int n_tok = depth + (np > ng ? np : ng) + 1;
    int *toks = xmalloc(n_tok * sizeof(int));
    for (int i = 0; i < n_tok; i++) toks[i] = (int)(rng_next(&rng) % (uint64_t)(c->n_vocab > 1000 ? 1000 : c->n_vocab));
    double *pp = xcalloc(reps, sizeof(double)), *tg = xcalloc(reps, sizeof(double));
    GpuInfo info = {0};
    snprintf(info.name, sizeof info.name, "CPU, %d threads", o->n_threads);
    double copy_bw = 0;
    if (e->use_gpu) { gpu_info(e->gpu, &info); copy_bw = gpu_copy_bandwidth(e->gpu); }
    fprintf(stderr, "bench: %s, prefill %d, decode %d, depth %d, %d runs after 1 warm-up\n", info.name, np, ng, depth, reps);
    if (e->use_gpu) fprintf(stderr, "bench: decode runs as a %s; prefill multiplies experts by %s\n", info.decode, info.prefill);
    if (depth > 0) { engine_reset(e); engine_eval(e, toks, depth, 0, NULL); }
    for (int r = -1; r < reps; r++) {
        if (np > 0) {
            e->pos = depth;
            double t0 = now_sec();
            engine_eval(e, toks + depth, np, 1, NULL);
            double dt = now_sec() - t0;
            if (r >= 0) pp[r] = np / dt;
        }
        if (ng > 0) {
            e->pos = depth;
            int next = toks[depth];
            double t0 = now_sec();
            char err[512];
            if (e->use_gpu && gpu_decode_queue(e->gpu, next, e->pos, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
            for (int i = 0; i < ng; i++) {
                if (e->use_gpu) {   /* step i + 1 queued (fed on the GPU) before step i's token is read, as in generate */
                    if (i + 1 < ng && gpu_decode_queue(e->gpu, -1, 0, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
                    if (gpu_decode_next(e->gpu, &next, err, sizeof err) != 0) die(EXIT_RUNTIME, "GPU: %s", err);
                    e->pos++;
                } else {
                    engine_eval(e, &next, 1, 1, NULL);
                    next = argmax(e->logits, c->n_vocab);
                }
            }
            double dt = now_sec() - t0;
            if (r >= 0) tg[r] = ng / dt;
        }
    }
    double ppm = 0, pplo = 0, pphi = 0, tgm = 0, tglo = 0, tghi = 0;
    if (np > 0) stats(pp, reps, &ppm, &pplo, &pphi);
    if (ng > 0) stats(tg, reps, &tgm, &tglo, &tghi);
    double bytes = decode_bytes(&m->w, depth + ng / 2.0);
    double gbs = tgm * bytes / 1e9;
    fprintf(stderr, "\n| %-28s | %-10s | %14s | %18s | %8s |\n", "card", "test", "tok/s (median)", "min..max", "GB/s");
    fprintf(stderr, "| %-28.28s | pp%-8d | %14.1f | %8.1f..%-8.1f | %8s |\n", info.name, np, ppm, pplo, pphi, "");
    fprintf(stderr, "| %-28.28s | tg%-8d | %14.1f | %8.1f..%-8.1f | %8.1f |\n", info.name, ng, tgm, tglo, tghi, gbs);
    fprintf(stderr, "decode reads %.3f GB per token (weights + KV at depth %d); ", bytes / 1e9, depth);
    if (copy_bw > 0) fprintf(stderr, "%.1f GB/s is %.1f%% of the measured copy bandwidth %.1f GB/s; ", gbs, 100 * gbs * 1e9 / copy_bw, copy_bw / 1e9);
    if (e->use_gpu) fprintf(stderr, "VRAM used by the model %.2f GiB", info.vram_used_model / 1073741824.0);
    fprintf(stderr, "\n");
    if (o->json) {
        printf("{\"card\":\"%s\",\"backend\":\"%s\",\"depth\":%d,\"reps\":%d,\"prefill\":{\"tokens\":%d,\"tok_s\":%.3f,\"min\":%.3f,\"max\":%.3f},"
               "\"decode\":{\"tokens\":%d,\"tok_s\":%.3f,\"min\":%.3f,\"max\":%.3f,\"bytes_per_token\":%.0f,\"gb_s\":%.3f},"
               "\"copy_bandwidth_gb_s\":%.3f,\"vram_used_bytes\":%zu,\"decode_path\":\"%s\",\"prefill_path\":\"%s\"}\n",
               info.name, e->use_gpu ? "gpu" : "cpu", depth, reps, np, ppm, pplo, pphi, ng, tgm, tglo, tghi, bytes, gbs,
               copy_bw / 1e9, info.vram_used_model, e->use_gpu ? info.decode : "cpu", e->use_gpu ? info.prefill : "cpu");
        out_flush();
    }
    free(toks); free(pp); free(tg);
    return EXIT_OK;
}

/* ============================================================================
 * 8. main: the command line
 * ========================================================================== */

static void usage(void) {
    printf(
        "usage: %s -m MODEL.gguf [options]\n"
        "\n"
        "input (one of; stdin is read when it is not a terminal):\n"
        "  -p, --prompt TEXT       the prompt\n"
        "  -f, --file FILE         read the prompt from FILE\n"
        "      --prompt-ids IDS    comma-separated token ids (no template)\n"
        "      --batch-lines       every stdin line is its own prompt, with a fresh context\n"
        "  -i, --interactive       multi-turn chat (KV cache kept between turns)\n"
        "\n"
        "chat:\n"
        "  -sys, --system-prompt TEXT  system message\n"
        "      --no-think          disable thinking (appends an empty <think></think> block)\n"
        "      --raw               plain completion: no chat template\n"
        "      --no-parse-special  treat special-token text in the prompt as plain text\n"
        "\n"
        "generation:\n"
        "  -n, --n-predict N       tokens to generate (-1 = until end or context full; 0 = prompt only) [-1]\n"
        "  -c, --ctx-size N        context size [min(4096, trained context)]\n"
        "  -t, --threads N         CPU threads [all cores]\n"
        "  -s, --seed N            sampling seed [random]\n"
        "      --temp T            temperature; 0 = greedy [0.6 thinking, 0.7 --no-think]\n"
        "      --top-k N           [20]    --top-p P [0.95 thinking, 0.8 --no-think]\n"
        "      --min-p P           [0]     --repeat-penalty R [1.0]  --repeat-last-n N [64]\n"
        "\n"
        "backend and checks:\n"
        "      --cpu               use the CPU reference path\n"
        "      --gpu               require the GPU path (error when no CUDA device)\n"
        "      --parity            run CPU and GPU teacher-forced on the same tokens and compare\n"
        "        --parity-mean-cos X [0.9999] --parity-min-cos X [0.999] --parity-top1 X [0.99]\n"
        "        --parity-experts X [0.99] --parity-tie-logit X [0.05] --parity-tie-router X [0.001]\n"
        "        --parity-router-err X [0.03]  largest GPU router probability error allowed\n"
        "        --parity-free-routing  the GPU follows its own router instead of the CPU's expert sets\n"
        "      --bench             prefill/decode throughput: -p N [512] -n N [128] -d/--depth N [0] -r/--repetitions N [5]\n"
        "\n"
        "output:\n"
        "      --json              one JSON object (per prompt) instead of streamed text\n"
        "      --tokenize          print the prompt's token ids as JSON and exit\n"
        "      --dump-logits FILE  write every evaluated position's logits (float32 rows of n_vocab)\n"
        "  -h, --help              this text      --version   the version\n"
        "\n"
        "exit codes: 0 ok, 1 bad model file, 2 bad command line, 3 parity failed, 4 runtime error, 130 interrupted\n",
        g_prog);
}

static long long parse_ll(const char *flag, const char *v, long long lo, long long hi) {
    if (!v) die(EXIT_USAGE, "%s needs a value", flag);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno) die(EXIT_USAGE, "%s: expected an integer, found '%s'", flag, v);
    if (x < lo || x > hi) die(EXIT_USAGE, "%s: %lld is out of range [%lld, %lld]", flag, x, lo, hi);
    return x;
}

static double parse_f(const char *flag, const char *v, double lo, double hi) {
    if (!v) die(EXIT_USAGE, "%s needs a value", flag);
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || x != x) die(EXIT_USAGE, "%s: expected a number, found '%s'", flag, v);
    if (x < lo || x > hi) die(EXIT_USAGE, "%s: %g is out of range [%g, %g]", flag, x, lo, hi);
    return x;
}

static int is_flag(const char *x, const char **names) {
    for (; *names; names++) if (strcmp(x, *names) == 0) return 1;
    return 0;
}

static void parse_args(int argc, char **argv, Options *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = -1; o->n_ctx = 0; o->n_threads = 0;
    o->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    o->top_k = 20; o->min_p = 0.0f; o->repeat_penalty = 1.0f; o->repeat_last_n = 64;
    o->think = 1; o->parse_special = 1;
    o->par_mean_cos = 0.9999; o->par_min_cos = 0.999; o->par_top1 = 0.99; o->par_experts = 0.99;
    o->par_tie_logit = 0.05; o->par_tie_router = 0.001; o->par_router_err = 0.03;
    o->bench_prompt = 512; o->bench_gen = 128; o->bench_reps = 5;
    const char *bench_p = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define IS(...) is_flag(a, (const char *[]){__VA_ARGS__, NULL})
#define NEED() do { if (!v) die(EXIT_USAGE, "%s needs a value", a); i++; } while (0)
        if (IS("-h", "--help")) { usage(); exit(EXIT_OK); }
        else if (IS("--version")) { printf("qwen3moe %s\n", QWEN3MOE_VERSION); exit(EXIT_OK); }
        else if (IS("-m", "--model")) { NEED(); o->model_path = v; }
        else if (IS("-p", "--prompt")) { NEED(); o->prompt = v; bench_p = v; }
        else if (IS("-f", "--file")) { NEED(); o->prompt_file = v; }
        else if (IS("--prompt-ids")) { NEED(); o->prompt_ids = v; }
        else if (IS("-sys", "--system-prompt")) { NEED(); o->system = v; }
        else if (IS("-n", "--n-predict")) { NEED(); o->n_predict = (int)parse_ll(a, v, -1, INT32_MAX); o->n_predict_set = 1; }
        else if (IS("-c", "--ctx-size")) { NEED(); o->n_ctx = (int)parse_ll(a, v, 1, INT32_MAX / 2); }
        else if (IS("-t", "--threads")) { NEED(); o->n_threads = (int)parse_ll(a, v, 1, 1024); }
        else if (IS("-s", "--seed")) { NEED(); o->seed = (uint64_t)parse_ll(a, v, 0, INT64_MAX); }
        else if (IS("--temp")) { NEED(); o->temp = (float)parse_f(a, v, 0, 100); o->temp_set = 1; }
        else if (IS("--top-k")) { NEED(); o->top_k = (int)parse_ll(a, v, 0, INT32_MAX); o->top_k_set = 1; }
        else if (IS("--top-p")) { NEED(); o->top_p = (float)parse_f(a, v, 0, 1); o->top_p_set = 1; }
        else if (IS("--min-p")) { NEED(); o->min_p = (float)parse_f(a, v, 0, 1); }
        else if (IS("--repeat-penalty")) { NEED(); o->repeat_penalty = (float)parse_f(a, v, 0.01, 100); }
        else if (IS("--repeat-last-n")) { NEED(); o->repeat_last_n = (int)parse_ll(a, v, -1, INT32_MAX); }
        else if (IS("-i", "--interactive")) o->interactive = 1;
        else if (IS("--raw")) o->raw = 1;
        else if (IS("--no-think")) o->think = 0;
        else if (IS("--no-parse-special")) o->parse_special = 0;
        else if (IS("--cpu")) o->cpu = 1;
        else if (IS("--gpu")) o->gpu = 1;
        else if (IS("--parity")) o->parity = 1;
        else if (IS("--bench")) o->bench = 1;
        else if (IS("--json")) o->json = 1;
        else if (IS("--tokenize")) o->tokenize_only = 1;
        else if (IS("--batch-lines")) o->batch_lines = 1;
        else if (IS("--dump-logits")) { NEED(); o->dump_logits = v; }
        else if (IS("--parity-mean-cos")) { NEED(); o->par_mean_cos = parse_f(a, v, -1, 1); }
        else if (IS("--parity-min-cos")) { NEED(); o->par_min_cos = parse_f(a, v, -1, 1); }
        else if (IS("--parity-top1")) { NEED(); o->par_top1 = parse_f(a, v, 0, 1); }
        else if (IS("--parity-experts")) { NEED(); o->par_experts = parse_f(a, v, 0, 1); }
        else if (IS("--parity-tie-logit")) { NEED(); o->par_tie_logit = parse_f(a, v, 0, 1e9); }
        else if (IS("--parity-tie-router")) { NEED(); o->par_tie_router = parse_f(a, v, 0, 1); }
        else if (IS("--parity-router-err")) { NEED(); o->par_router_err = parse_f(a, v, 0, 1); }
        else if (IS("--parity-free-routing")) o->par_free_routing = 1;
        else if (IS("-d", "--depth")) { NEED(); o->bench_depth = (int)parse_ll(a, v, 0, INT32_MAX / 4); }
        else if (IS("-r", "--repetitions")) { NEED(); o->bench_reps = (int)parse_ll(a, v, 1, 1000); }
        else die(EXIT_USAGE, "unknown flag '%s'", a);
#undef IS
#undef NEED
    }
    if (!o->model_path) die(EXIT_USAGE, "no model: give -m MODEL.gguf");
    if (o->cpu && o->gpu) die(EXIT_USAGE, "--cpu and --gpu contradict each other");
    int inputs = !!o->prompt + !!o->prompt_file + !!o->prompt_ids;
    if (o->bench) {
        /* in --bench, -p and -n are token counts, as in llama-bench */
        o->prompt = NULL;
        if (bench_p) o->bench_prompt = (int)parse_ll("-p", bench_p, 0, 1 << 20);
        if (o->n_predict_set) o->bench_gen = o->n_predict < 0 ? 0 : o->n_predict;
    } else if (inputs > 1) {
        die(EXIT_USAGE, "give only one of -p, -f and --prompt-ids");
    }
    if (o->interactive && (inputs || o->batch_lines || o->parity || o->tokenize_only))
        die(EXIT_USAGE, "-i reads the conversation from the terminal; it does not combine with -p/-f/--prompt-ids/--batch-lines/--parity/--tokenize");
    if (o->batch_lines && inputs) die(EXIT_USAGE, "--batch-lines reads prompts from stdin; it does not combine with -p/-f/--prompt-ids");
    if (o->tokenize_only && o->prompt_ids) die(EXIT_USAGE, "--tokenize needs text (-p, -f or stdin), not --prompt-ids");
    if (o->parity && o->cpu) die(EXIT_USAGE, "--parity runs both paths; drop --cpu");
    /* Qwen3's published sampling defaults, by thinking mode */
    if (!o->temp_set) o->temp = o->think ? 0.6f : 0.7f;
    if (!o->top_p_set) o->top_p = o->think ? 0.95f : 0.8f;
    if (o->n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->n_threads = n > 0 ? (int)n : 1;
    }
}

#ifndef QWEN3MOE_NO_MAIN
int main(int argc, char **argv) {
    Options o;
    parse_args(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;   /* no SA_RESTART: Ctrl-C at the chat prompt ends the read */
    sigaction(SIGINT, &sa, NULL);

    struct stat st;
    if (stat(o.model_path, &st) != 0) die(EXIT_USAGE, "cannot open model '%s': %s", o.model_path, strerror(errno));
    if (o.prompt_file && stat(o.prompt_file, &st) != 0) die(EXIT_USAGE, "cannot open prompt file '%s': %s", o.prompt_file, strerror(errno));

    double t_load = now_sec();
    Model m;
    model_open(&m, o.model_path);
    Tokenizer tok;
    tokenizer_load(&tok, &m);
    const Config *c = &m.w.cfg;
    if (o.n_ctx == 0) o.n_ctx = c->n_ctx_train < 4096 ? c->n_ctx_train : 4096;

    /* the text of the prompt, from -p, -f or stdin */
    char *text = NULL;
    size_t text_n = 0;
    if (o.prompt) { text_n = strlen(o.prompt); text = xmalloc(text_n + 1); memcpy(text, o.prompt, text_n + 1); }
    else if (o.prompt_file) text = read_file(o.prompt_file, &text_n);
    else if (!o.prompt_ids && !o.interactive && !o.batch_lines && !o.bench) {
        if (isatty(STDIN_FILENO)) die(EXIT_USAGE, "no prompt: give -p TEXT, -f FILE, --prompt-ids, pipe text on stdin, or use -i");
        text = read_stream(stdin, &text_n);
        /* a piped prompt usually ends with the newline of its last line */
        if (text_n > 0 && text[text_n - 1] == '\n') text[--text_n] = 0;
        if (text_n > 0 && text[text_n - 1] == '\r') text[--text_n] = 0;
        if (text_n == 0) die(EXIT_USAGE, "stdin was empty: no prompt to answer");
    }

    if (o.tokenize_only) {
        int rc = run_tokenize(&o, &tok, text ? text : "", text_n);
        free(text);
        tokenizer_free(&tok);
        model_close(&m);
        return rc;
    }

    int *prompt = NULL;
    if (o.prompt_ids) prompt = parse_id_list(o.prompt_ids, c->n_vocab);
    else if (text) prompt = build_prompt(&o, &tok, text, text_n, 1);

    if (o.parity) {
        int rc = run_parity(&o, &m, &tok, prompt, (int)arrlen(prompt));
        arrfree(prompt); free(text); tokenizer_free(&tok); model_close(&m);
        return rc;
    }

    int n_dev = gpu_device_count();
    int use_gpu = !o.cpu && n_dev > 0;
    if (o.gpu && n_dev == 0) die(EXIT_RUNTIME, "--gpu: no CUDA device found");
    if (!o.cpu && n_dev == 0) fprintf(stderr, "no CUDA device found, using the CPU path\n");

    Engine e;
    engine_init(&e, &m, &tok, use_gpu, o.n_ctx, o.n_threads);
    fprintf(stderr, "loaded %s: %d layers, %d experts (%d used), vocab %d, context %d, %s in %.2f s\n", o.model_path, c->n_layer,
            c->n_expert, c->n_expert_used, c->n_vocab, o.n_ctx, use_gpu ? "GPU" : "CPU", now_sec() - t_load);

    int rc;
    if (o.bench) rc = run_bench(&o, &m, &e);
    else if (o.interactive) rc = run_interactive(&o, &e, &tok);
    else if (o.batch_lines) rc = run_batch_lines(&o, &e, &tok);
    else rc = run_once(&o, &e, prompt, (int)arrlen(prompt));

    engine_free(&e);
    arrfree(prompt);
    free(text);
    tokenizer_free(&tok);
    model_close(&m);
    return rc;
}
#endif /* QWEN3MOE_NO_MAIN */

/* Without nvcc the GPU path is compiled out: the binary reports no device. */
#ifdef QWEN3MOE_NO_CUDA
int gpu_device_count(void) { return 0; }
GpuModel *gpu_load(const Weights *w, int n_ctx, int progress, char *err, size_t errlen) {
    snprintf(err, errlen, "this build has no GPU support (nvcc was not found when it was built)");
    return NULL;
}
void gpu_free(GpuModel *g) {}
int gpu_info(GpuModel *g, GpuInfo *info) { return -1; }
int gpu_eval(GpuModel *g, const int *tokens, int n, int pos, float *logits, int all_logits, int *experts, float *expert_p, char *err, size_t errlen) {
    snprintf(err, errlen, "no GPU support in this build");
    return -1;
}
int gpu_decode_queue(GpuModel *g, int token, int pos, char *err, size_t errlen) {
    snprintf(err, errlen, "no GPU support in this build");
    return -1;
}
int gpu_decode_next(GpuModel *g, int *next, char *err, size_t errlen) {
    snprintf(err, errlen, "no GPU support in this build");
    return -1;
}
int gpu_decode_drop(GpuModel *g, char *err, size_t errlen) { return 0; }
int gpu_force_experts(GpuModel *g, const int *ids, int n, char *err, size_t errlen) {
    snprintf(err, errlen, "no GPU support in this build");
    return -1;
}
double gpu_copy_bandwidth(GpuModel *g) { return 0; }
#endif
