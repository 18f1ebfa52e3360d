/* gen_model.c — writes a Qwen3-MoE GGUF file of any shape with random weights.
 *
 *   build/gen_model -o FILE [options]          (build/gen_model --help for the list)
 *
 * The file is laid out as llama.cpp's converter + llama-quantize would write it:
 * the same metadata keys and value types, tensor names, shapes (ggml order, ne0
 * contiguous) and per-tensor quant choices (--mix q4_k_m | q8_0 | q4_0), with a
 * byte-level BPE vocabulary (a small one learned here from a built-in English text,
 * or the real Qwen3 one exported by tests/export_vocab.mjs).
 *
 * Weights: matrices ~ N(0, gain/sqrt(fan_in)) in spirit (random quant blocks with
 * that spread, see tests/randquant.h); norm weights 1 + 0.1*noise; the router and
 * the output head get their own gains so that top-k / top-1 decisions have clear
 * margins (random small routers otherwise give near-ties).
 *
 * Determinism: tensor data is cut into chunks that depend only on the tensor, and
 * each chunk has its own rng seeded from (seed, tensor index, chunk index), so the
 * bytes are identical for a seed whatever --threads is. The file is written to
 * FILE.tmp.PID with pwrite from worker threads, then renamed into place.
 *
 * Exit codes: 0 ok, 2 bad usage, 1 I/O or other failure.
 */
#define _GNU_SOURCE
#define GGUF_IMPLEMENTATION
#include "gguf.h"
/* No fused multiply-add in the weight generation: GCC's GNU modes contract a*b+c
 * across statements and inlined calls when the target has FMA (-march=native), clang
 * does not, and the two round differently, so the same seed would give files that
 * differ in a few f16 scales between builds. With contraction off every compiler and
 * flag set writes the same bytes. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "randquant.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ errors */
static void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gen_model: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(gen_model --help lists the options)\n");
    va_end(ap);
    exit(2);
}
static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gen_model: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) fail("out of memory (%zu bytes)", n);
    return p;
}
static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) fail("out of memory (%zu bytes)", n);
    return p;
}
static char *xstrndup(const char *s, size_t n) {
    char *r = xmalloc(n + 1);
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ rng */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint64_t chunk_seed(uint64_t seed, uint64_t tensor, uint64_t chunk) {
    return mix64(mix64(mix64(seed ^ 0x5eed5eed5eedull) + tensor * 0x9e3779b97f4a7c15ull) + chunk);
}
/* approximately standard normal: sum of 4 uniforms, scaled */
static float rng_normal(uint64_t *s) {
    uint64_t r = randquant_next(s);
    return ((float)((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48)) - 131070.0f) *
           (1.7320508f / 65536.0f);
}

/* ------------------------------------------------------------------ byte buffer */
typedef struct { uint8_t *p; size_t n, cap; } buf_t;
static void buf_put(buf_t *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + n) c *= 2;
        b->p = xrealloc(b->p, c);
        b->cap = c;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void buf_u8(buf_t *b, uint8_t v) { buf_put(b, &v, 1); }
static void buf_u32(buf_t *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_i32(buf_t *b, int32_t v) { buf_put(b, &v, 4); }
static void buf_u64(buf_t *b, uint64_t v) { buf_put(b, &v, 8); }
static void buf_f32(buf_t *b, float v) { buf_put(b, &v, 4); }
static void buf_str(buf_t *b, const char *s, size_t n) { buf_u64(b, n); buf_put(b, s, n); }

/* metadata KVs, counted */
typedef struct { buf_t b; uint64_t n; } kvs_t;
static void kv_key(kvs_t *k, const char *key, uint32_t type) {
    buf_str(&k->b, key, strlen(key));
    buf_u32(&k->b, type);
    k->n++;
}
static void kv_u32(kvs_t *k, const char *key, uint32_t v) { kv_key(k, key, GGUF_KV_UINT32); buf_u32(&k->b, v); }
static void kv_f32(kvs_t *k, const char *key, float v) { kv_key(k, key, GGUF_KV_FLOAT32); buf_f32(&k->b, v); }
static void kv_bool(kvs_t *k, const char *key, int v) { kv_key(k, key, GGUF_KV_BOOL); buf_u8(&k->b, v ? 1 : 0); }
static void kv_str(kvs_t *k, const char *key, const char *s) { kv_key(k, key, GGUF_KV_STRING); buf_str(&k->b, s, strlen(s)); }
static void kv_arr_head(kvs_t *k, const char *key, uint32_t elem, uint64_t n) {
    kv_key(k, key, GGUF_KV_ARRAY);
    buf_u32(&k->b, elem);
    buf_u64(&k->b, n);
}

/* ------------------------------------------------------------------ vocabulary */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

typedef struct {
    int64_t n;            /* tokens, including padding */
    char **tok; uint32_t *len; int32_t *type;
    int64_t n_merges;
    char **merge; uint32_t *mlen;
    char *chat_template;
} vocab_t;

static void vocab_add(vocab_t *v, const char *s, size_t n, int type) {
    if ((v->n & (v->n - 1)) == 0) {  /* grow at powers of two */
        size_t c = v->n ? (size_t)v->n * 2 : 1024;
        v->tok = xrealloc(v->tok, c * sizeof *v->tok);
        v->len = xrealloc(v->len, c * sizeof *v->len);
        v->type = xrealloc(v->type, c * sizeof *v->type);
    }
    v->tok[v->n] = xstrndup(s, n);
    v->len[v->n] = (uint32_t)n;
    v->type[v->n] = type;
    v->n++;
}
static void vocab_add_merge(vocab_t *v, const char *s, size_t n) {
    if ((v->n_merges & (v->n_merges - 1)) == 0) {
        size_t c = v->n_merges ? (size_t)v->n_merges * 2 : 1024;
        v->merge = xrealloc(v->merge, c * sizeof *v->merge);
        v->mlen = xrealloc(v->mlen, c * sizeof *v->mlen);
    }
    v->merge[v->n_merges] = xstrndup(s, n);
    v->mlen[v->n_merges] = (uint32_t)n;
    v->n_merges++;
}
static int64_t vocab_find(const vocab_t *v, const char *s) {
    size_t n = strlen(s);
    for (int64_t i = v->n - 1; i >= 0; i--)  /* specials live at the end */
        if (v->len[i] == n && memcmp(v->tok[i], s, n) == 0) return i;
    return -1;
}
static void vocab_pad(vocab_t *v, int64_t n_vocab) {
    char name[64];
    while (v->n < n_vocab) {
        int k = snprintf(name, sizeof name, "[PAD%lld]", (long long)v->n);
        vocab_add(v, name, (size_t)k, TT_UNUSED);
    }
}

/* GPT-2 byte-to-unicode: printable bytes map to themselves, the others to U+0100.. */
static int byte_cp[256];      /* code point of each byte */
static int byte_order[256];   /* GPT-2 vocabulary order of the byte tokens */
static void init_bytes(void) {
    int n = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (printable) { byte_cp[b] = b; byte_order[n++] = b; }
    }
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (!printable) { byte_cp[b] = 256 + extra++; byte_order[n++] = b; }
    }
}
static int utf8_put(char *o, int cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
    return 3;
}

/* The text the tiny vocabulary's merges are learned from (written for this
 * generator; plain ASCII). Frequent words and " word" forms become tokens. */
static const char *tiny_corpus =
    "The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran into the woods.\n"
    "Hello, world! Hello there. How are you today? I am fine, thank you. What is your name? My name is Qwen.\n"
    "You are a helpful assistant. The user asks a question and the assistant gives an answer.\n"
    "The assistant should think about the question before it writes the answer to the user.\n"
    "In the beginning there was a small model with a small vocabulary, and it was good enough for the tests.\n"
    "This is a test of the tokenizer. It is only a test. If this were a real model, the answer would make sense.\n"
    "The weather is nice today, so we will go for a walk in the park and then have some tea with the neighbors.\n"
    "Machine learning models are trained on large amounts of text. A language model predicts the next token.\n"
    "Each token is a piece of a word, a whole word, or a symbol. The model reads the tokens one at a time.\n"
    "There are many ways to write a program, and some of them are better than others. Write the tests first.\n"
    "The time is now. The place is here. The people are ready, and they want to know what will happen next.\n"
    "She said that he would come back in the morning, but he did not come back until the evening of the next day.\n"
    "We have to make sure that the numbers are right: one, two, three, four, five, six, seven, eight, nine, ten.\n"
    "When the sun goes down, the stars come out. When the stars come out, the night is dark and quiet and cold.\n"
    "They would like to have a house by the sea, with a garden and a tree, where the children can play all day.\n"
    "Please tell me a story about a cat who lives in a city and wants to see the world outside of the window.\n"
    "The cat looked at the window and thought about the world. Then the cat went to sleep, as cats often do.\n"
    "What do you think about that? I think that it is a good idea, but we should ask the others what they think.\n"
    "It was the best of times, it was the worst of times; it was a time of light and a time of darkness.\n"
    "Explain the answer in one paragraph. Give a short answer. Use simple words. Do not use more than ten words.\n"
    "For example, the number of people who live in the city has grown from year to year for a long time.\n"
    "All of the students in the school were asked to read the book and to write about what they had learned.\n"
    "There is no reason to be afraid of the dark, because the dark is only the light that has gone away for a while.\n"
    "def main():\n    print(\"Hello, world!\")\n    for i in range(10):\n        print(i)\n    return 0\n\n"
    "int main(void) {\n    printf(\"hello\\n\");\n    return 0;\n}\n\n"
    "The end of the story is not the end of the world. Tomorrow is a new day, and the sun will rise again.\n";

typedef struct { char *s; int n; int count; int *sym; int nsym; } tw_word;

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_nl(int c) { return c == '\n' || c == '\r'; }

/* Length of the pre-token at s[i] following the Qwen2 pre-tokenizer regex, for
 * ASCII text: (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N} |
 * ' ?[^\s\p{L}\p{N}]+[\r\n]*' | \s*[\r\n]+ | \s+(?!\S) | \s+ */
static int pretok_len(const char *s, int i, int n) {
    int c = s[i];
    if (c == '\'' && i + 1 < n) {
        int a = tolower(s[i + 1]), b = i + 2 < n ? tolower(s[i + 2]) : 0;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    }
    {
        int j = i;
        if (!is_nl(c) && !is_alpha(c) && !is_digit(c) && j + 1 < n && is_alpha(s[j + 1])) j++;
        if (is_alpha(s[j])) {
            while (j < n && is_alpha(s[j])) j++;
            return j - i;
        }
    }
    if (is_digit(c)) return 1;
    {
        int j = i;
        if (c == ' ' && j + 1 < n && !is_space(s[j + 1]) && !is_alpha(s[j + 1]) && !is_digit(s[j + 1])) j++;
        if (!is_space(s[j]) && !is_alpha(s[j]) && !is_digit(s[j])) {
            while (j < n && !is_space(s[j]) && !is_alpha(s[j]) && !is_digit(s[j])) j++;
            while (j < n && is_nl(s[j])) j++;
            return j - i;
        }
    }
    /* whitespace */
    int j = i;
    while (j < n && is_space(s[j])) j++;
    int last_nl = -1;
    for (int k = i; k < j; k++)
        if (is_nl(s[k])) last_nl = k;
    if (last_nl >= 0) return last_nl + 1 - i;
    if (j < n && j - i > 1) return j - i - 1;  /* \s+(?!\S): leave one space for the next word */
    return j - i;
}

static void build_tiny_vocab(vocab_t *v, int target_merges) {
    init_bytes();
    char u[8];
    for (int i = 0; i < 256; i++) vocab_add(v, u, (size_t)utf8_put(u, byte_cp[byte_order[i]]), TT_NORMAL);
    int id_of_byte[256];
    for (int i = 0; i < 256; i++) id_of_byte[byte_order[i]] = i;

    /* distinct pre-tokens with counts */
    const char *s = tiny_corpus;
    int n = (int)strlen(s), nw = 0, capw = 256;
    tw_word *w = xmalloc(sizeof *w * capw);
    for (int i = 0; i < n;) {
        int l = pretok_len(s, i, n);
        int k;
        for (k = 0; k < nw; k++)
            if (w[k].n == l && memcmp(w[k].s, s + i, l) == 0) break;
        if (k == nw) {
            if (nw == capw) w = xrealloc(w, sizeof *w * (capw *= 2));
            w[nw].s = xstrndup(s + i, l);
            w[nw].n = l;
            w[nw].count = 0;
            w[nw].sym = xmalloc(sizeof(int) * l);
            w[nw].nsym = l;
            for (int q = 0; q < l; q++) w[nw].sym[q] = id_of_byte[(uint8_t)s[i + q]];
            nw++;
        }
        w[k].count++;
        i += l;
    }
    /* learn merges: most frequent adjacent pair, ties to the lowest ids */
    int V = 256 + target_merges;
    int *cnt = xmalloc(sizeof(int) * (size_t)V * V);
    for (int m = 0; m < target_merges; m++) {
        memset(cnt, 0, sizeof(int) * (size_t)V * V);
        for (int k = 0; k < nw; k++)
            for (int q = 0; q + 1 < w[k].nsym; q++) cnt[w[k].sym[q] * V + w[k].sym[q + 1]] += w[k].count;
        int best = -1, bc = 1;
        for (int p = 0; p < V * V; p++)
            if (cnt[p] > bc) { bc = cnt[p]; best = p; }
        if (best < 0) break;  /* nothing occurs twice any more */
        int a = best / V, b = best % V, id = (int)v->n;
        char *t = xmalloc(v->len[a] + v->len[b] + 2);
        memcpy(t, v->tok[a], v->len[a]);
        t[v->len[a]] = ' ';
        memcpy(t + v->len[a] + 1, v->tok[b], v->len[b]);
        vocab_add_merge(v, t, v->len[a] + 1 + v->len[b]);
        memmove(t + v->len[a], t + v->len[a] + 1, v->len[b]);
        vocab_add(v, t, v->len[a] + v->len[b], TT_NORMAL);
        free(t);
        for (int k = 0; k < nw; k++) {
            int o = 0;
            for (int q = 0; q < w[k].nsym; q++) {
                if (q + 1 < w[k].nsym && w[k].sym[q] == a && w[k].sym[q + 1] == b) { w[k].sym[o++] = id; q++; }
                else w[k].sym[o++] = w[k].sym[q];
            }
            w[k].nsym = o;
        }
    }
    free(cnt);
    for (int k = 0; k < nw; k++) { free(w[k].s); free(w[k].sym); }
    free(w);

    static const char *specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"};
    for (int i = 0; i < 5; i++) vocab_add(v, specials[i], strlen(specials[i]), i < 3 ? TT_CONTROL : TT_USER_DEFINED);
    static const char chatml[] =
        "{%- for message in messages %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}"
        "{{- '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
        "{%- endif %}";
    v->chat_template = xstrndup(chatml, strlen(chatml));
}

/* reads the file written by tests/export_vocab.mjs */
static void read_real_vocab(vocab_t *v, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) usage_error("cannot open --vocab-file %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *d = xmalloc((size_t)sz + 1);
    if (sz < 0 || fread(d, 1, (size_t)sz, f) != (size_t)sz) fail("%s: read error", path);
    fclose(f);
    d[sz] = 0;
    char *p = d, *end = d + sz;
#define BAD(what) fail("%s: bad vocab file at offset %ld: %s", path, (long)(p - d), what)
#define NUM(var) do { char *e_; errno = 0; long long x_ = strtoll(p, &e_, 10); \
        if (e_ == p || errno || x_ < 0) { BAD("expected a number"); } var = x_; p = e_; } while (0)
#define LIT(s) do { size_t l_ = strlen(s); if ((size_t)(end - p) < l_ || memcmp(p, s, l_)) { BAD("expected \"" s "\""); } p += l_; } while (0)
    LIT("qwen3moe-vocab 1\ntokens ");
    long long nt, nm, len, type;
    NUM(nt);
    LIT("\n");
    for (long long i = 0; i < nt; i++) {
        NUM(type); LIT(" "); NUM(len); LIT(" ");
        if (end - p < len + 1 || p[len] != '\n') BAD("token text");
        vocab_add(v, p, (size_t)len, (int)type);
        p += len + 1;
    }
    LIT("merges ");
    NUM(nm);
    LIT("\n");
    for (long long i = 0; i < nm; i++) {
        NUM(len); LIT(" ");
        if (end - p < len + 1 || p[len] != '\n') BAD("merge text");
        vocab_add_merge(v, p, (size_t)len);
        p += len + 1;
    }
    LIT("template ");
    NUM(len);
    LIT("\n");
    if (end - p < len + 1) BAD("template text");
    v->chat_template = xstrndup(p, (size_t)len);
    p += len;
    LIT("\nend\n");
#undef BAD
#undef NUM
#undef LIT
    free(d);
}

/* ------------------------------------------------------------------ options */
typedef struct { regex_t re; char *pat; uint32_t type; } override_t;

typedef struct {
    const char *out, *name, *vocab_file, *preset;
    uint64_t seed;
    int64_t n_layer, n_embd, n_head, n_head_kv, head_dim, n_expert, n_expert_used, ff_dense, ctx, n_vocab;
    int64_t *ff; int n_ff;   /* n_ff == 1: scalar; else one per layer */
    double rope_theta, eps, router_gain, output_gain;
    int tied, vocab_real, type, mix, threads, alignment, alignment_set, version, quiet;
    override_t *ov; int n_ov;
} opts_t;

enum { MIX_NONE = 0, MIX_Q4_K_M, MIX_Q8_0, MIX_Q4_0 };

static const uint32_t allowed_types[] = {
    GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
    GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
    GGML_TYPE_Q6_K, GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS};
static int parse_type(const char *s) {
    for (size_t i = 0; i < sizeof allowed_types / sizeof *allowed_types; i++)
        if (strcasecmp(s, gguf_type_get(allowed_types[i])->name) == 0) return (int)allowed_types[i];
    return -1;
}
static const char *tname(uint32_t t) { return gguf_type_get(t)->name; }

static int64_t parse_int(const char *opt, const char *s, int64_t lo, int64_t hi) {
    char *e;
    errno = 0;
    long long v = strtoll(s, &e, 10);
    if (!*s || *e || errno) usage_error("%s: '%s' is not an integer", opt, s);
    if (v < lo || v > hi) usage_error("%s: %lld is out of range [%lld, %lld]", opt, v, (long long)lo, (long long)hi);
    return v;
}
static double parse_float(const char *opt, const char *s, double lo, double hi) {
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (!*s || *e || errno || !isfinite(v)) usage_error("%s: '%s' is not a number", opt, s);
    if (v < lo || v > hi) usage_error("%s: %g is out of range [%g, %g]", opt, v, lo, hi);
    return v;
}

static void help(void) {
    printf(
        "usage: gen_model -o FILE [options]   writes a Qwen3-MoE GGUF with random weights\n"
        "  -o, --output FILE      output file (required); written as FILE.tmp.PID, then renamed\n"
        "  --seed N               rng seed (default 1); same seed, same bytes, any --threads\n"
        "  --preset tiny|micro|30b-a3b   shape defaults (tiny is the default):\n"
        "        tiny:    2 layers, embd 256, 4/2 heads of 128, 8 experts/2 used, ff 256, ctx 4096\n"
        "        micro:   2 layers, embd 64, 4/2 heads of 32, 8 experts/2 used, ff 32, ctx 2048\n"
        "                 (too narrow for k-quants: those fall back as llama.cpp does)\n"
        "        30b-a3b: 48 layers, embd 2048, 32/4 heads of 128, 128 experts/8 used, ff 768,\n"
        "                 feed_forward_length 6144, ctx 40960, rope 1e6, eps 1e-6\n"
        "  --layers N --embd N --heads N --heads-kv N --head-dim N --experts N --experts-used N\n"
        "  --ff N | --ff N1,N2,...   expert FFN width, or one per layer (written as an array)\n"
        "  --ff-dense N           qwen3moe.feed_forward_length (default 3*embd; 6144 for 30b-a3b)\n"
        "  --ctx N --rope-theta F --eps F\n"
        "  --tied                 no output.weight (tied to token_embd)\n"
        "  --vocab tiny|real      tiny (default): small byte-level BPE learned from a built-in text;\n"
        "                         real: the Qwen3 vocabulary, needs --vocab-file\n"
        "  --vocab-file F         made by: node tests/export_vocab.mjs F\n"
        "  --n-vocab N            pad the vocabulary with [PADn] tokens to N (real: default 151936)\n"
        "  --type T               every matrix in T: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k\n"
        "                         q4_k q5_k q6_k iq4_nl iq4_xs (norms and routers stay f32)\n"
        "  --mix q4_k_m|q8_0|q4_0 llama-quantize's per-tensor choices for that file type\n"
        "  --tensor-type RE=T     tensors whose name matches the POSIX extended regex (a substring\n"
        "                         works) get type T; repeatable, the first match wins\n"
        "      (a row length not divisible by the type's block size falls back as llama.cpp does:\n"
        "       q2_k q3_k iq4_xs -> iq4_nl, q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0, then f16)\n"
        "  --router-gain G        router weights ~ G/sqrt(embd) (default 2: router logits of std ~2)\n"
        "  --output-gain G        output head ~ G/sqrt(embd) (default 4)\n"
        "  --threads N            worker threads (default: all cores)\n"
        "  --alignment N          general.alignment (power of two; default 32, key written if given)\n"
        "  --version 2|3          GGUF version (default 3)\n"
        "  --name S               general.name\n"
        "  -q, --quiet            no summary on stderr\n"
        "exit codes: 0 ok, 1 failure (I/O), 2 bad usage\n");
}

static void parse_args(opts_t *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->n_layer = o->n_embd = o->n_head = o->n_head_kv = o->head_dim = o->n_expert = o->n_expert_used = -1;
    o->ff_dense = o->ctx = o->n_vocab = -1;
    o->rope_theta = o->eps = -1;
    o->router_gain = 2.0;
    o->output_gain = 4.0;
    o->type = GGML_TYPE_F32;
    o->version = 3;
    o->alignment = 32;
    int type_set = 0;
    const int64_t BIG = (int64_t)1 << 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { help(); exit(0); }
        if (!strcmp(a, "--tied")) { o->tied = 1; continue; }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        /* everything else takes a value: --opt V or --opt=V */
        const char *val = NULL;
        char key[64];
        const char *eq = strchr(a, '=');
        if (a[0] == '-' && a[1] == '-' && eq && (size_t)(eq - a) < sizeof key) {
            memcpy(key, a, eq - a);
            key[eq - a] = 0;
            val = eq + 1;
            a = key;
        }
        static const char *known[] = {"-o", "--output", "--seed", "--preset", "--layers", "--embd", "--heads",
            "--heads-kv", "--head-dim", "--experts", "--experts-used", "--ff", "--ff-dense", "--ctx",
            "--rope-theta", "--eps", "--vocab", "--vocab-file", "--n-vocab", "--type", "--mix", "--tensor-type",
            "--router-gain", "--output-gain", "--threads", "--alignment", "--version", "--name", NULL};
        int k;
        for (k = 0; known[k]; k++)
            if (!strcmp(a, known[k])) break;
        if (!known[k]) usage_error("unknown option '%s'", argv[i]);
        if (!val) {
            if (i + 1 >= argc) usage_error("%s needs a value", a);
            val = argv[++i];
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) o->out = val;
        else if (!strcmp(a, "--seed")) o->seed = (uint64_t)parse_int(a, val, 0, INT64_MAX);
        else if (!strcmp(a, "--preset")) {
            if (strcmp(val, "tiny") && strcmp(val, "micro") && strcmp(val, "30b-a3b"))
                usage_error("--preset: unknown preset '%s' (tiny, micro, 30b-a3b)", val);
            o->preset = val;
        }
        else if (!strcmp(a, "--layers")) o->n_layer = parse_int(a, val, 1, 4096);
        else if (!strcmp(a, "--embd")) o->n_embd = parse_int(a, val, 1, BIG);
        else if (!strcmp(a, "--heads")) o->n_head = parse_int(a, val, 1, 65536);
        else if (!strcmp(a, "--heads-kv")) o->n_head_kv = parse_int(a, val, 1, 65536);
        else if (!strcmp(a, "--head-dim")) o->head_dim = parse_int(a, val, 2, 65536);
        else if (!strcmp(a, "--experts")) o->n_expert = parse_int(a, val, 1, 65536);
        else if (!strcmp(a, "--experts-used")) o->n_expert_used = parse_int(a, val, 1, 65536);
        else if (!strcmp(a, "--ff")) {
            free(o->ff);
            o->ff = NULL;
            o->n_ff = 0;
            const char *p = val;
            for (;;) {
                const char *c = strchr(p, ',');
                size_t l = c ? (size_t)(c - p) : strlen(p);
                char tmp[32];
                if (l == 0 || l >= sizeof tmp) usage_error("--ff: bad list '%s'", val);
                memcpy(tmp, p, l);
                tmp[l] = 0;
                o->ff = xrealloc(o->ff, sizeof *o->ff * (o->n_ff + 1));
                o->ff[o->n_ff++] = parse_int("--ff", tmp, 1, BIG);
                if (!c) break;
                p = c + 1;
            }
        }
        else if (!strcmp(a, "--ff-dense")) o->ff_dense = parse_int(a, val, 1, BIG);
        else if (!strcmp(a, "--ctx")) o->ctx = parse_int(a, val, 1, UINT32_MAX);
        else if (!strcmp(a, "--rope-theta")) o->rope_theta = parse_float(a, val, 1e-3, 1e12);
        else if (!strcmp(a, "--eps")) o->eps = parse_float(a, val, 1e-30, 1.0);
        else if (!strcmp(a, "--vocab")) {
            if (!strcmp(val, "tiny")) o->vocab_real = 0;
            else if (!strcmp(val, "real")) o->vocab_real = 1;
            else usage_error("--vocab: '%s' is not tiny or real", val);
        }
        else if (!strcmp(a, "--vocab-file")) o->vocab_file = val;
        else if (!strcmp(a, "--n-vocab")) o->n_vocab = parse_int(a, val, 1, BIG);
        else if (!strcmp(a, "--type")) {
            int t = parse_type(val);
            if (t < 0) usage_error("--type: unknown or unsupported type '%s'", val);
            o->type = t;
            type_set = 1;
        }
        else if (!strcmp(a, "--mix")) {
            if (!strcasecmp(val, "q4_k_m")) o->mix = MIX_Q4_K_M;
            else if (!strcasecmp(val, "q8_0")) o->mix = MIX_Q8_0;
            else if (!strcasecmp(val, "q4_0")) o->mix = MIX_Q4_0;
            else usage_error("--mix: '%s' is not q4_k_m, q8_0 or q4_0", val);
        }
        else if (!strcmp(a, "--tensor-type")) {
            const char *e = strrchr(val, '=');
            if (!e || e == val || !e[1]) usage_error("--tensor-type: expected PATTERN=TYPE, got '%s'", val);
            int t = parse_type(e + 1);
            if (t < 0) usage_error("--tensor-type: unknown or unsupported type '%s'", e + 1);
            o->ov = xrealloc(o->ov, sizeof *o->ov * (o->n_ov + 1));
            override_t *ov = &o->ov[o->n_ov];
            ov->pat = xstrndup(val, (size_t)(e - val));
            ov->type = (uint32_t)t;
            if (regcomp(&ov->re, ov->pat, REG_EXTENDED | REG_NOSUB))
                usage_error("--tensor-type: bad regular expression '%s'", ov->pat);
            o->n_ov++;
        }
        else if (!strcmp(a, "--router-gain")) o->router_gain = parse_float(a, val, 0, 1e6);
        else if (!strcmp(a, "--output-gain")) o->output_gain = parse_float(a, val, 0, 1e6);
        else if (!strcmp(a, "--threads")) o->threads = (int)parse_int(a, val, 1, 1024);
        else if (!strcmp(a, "--alignment")) {
            o->alignment = (int)parse_int(a, val, 1, 1 << 20);
            if (o->alignment & (o->alignment - 1)) usage_error("--alignment: %d is not a power of two", o->alignment);
            o->alignment_set = 1;
        }
        else if (!strcmp(a, "--version")) o->version = (int)parse_int(a, val, 2, 3);
        else if (!strcmp(a, "--name")) o->name = val;
    }
    if (!o->out) usage_error("missing -o FILE");
    if (type_set && o->mix) usage_error("--type and --mix exclude each other");

    /* presets fill what was not given */
    const char *pr = o->preset ? o->preset : "tiny";
    int64_t L, E, H, HKV, HD, X, XU, FF, FFD, C;
    double RT, EPS;
    if (!strcmp(pr, "30b-a3b")) { L = 48; E = 2048; H = 32; HKV = 4; HD = 128; X = 128; XU = 8; FF = 768; FFD = 6144; C = 40960; RT = 1e6; EPS = 1e-6; }
    else if (!strcmp(pr, "micro")) { L = 2; E = 64; H = 4; HKV = 2; HD = 32; X = 8; XU = 2; FF = 32; FFD = -1; C = 2048; RT = 1e6; EPS = 1e-6; }
    else { L = 2; E = 256; H = 4; HKV = 2; HD = 128; X = 8; XU = 2; FF = 256; FFD = -1; C = 4096; RT = 1e6; EPS = 1e-6; }
#define DEF(f, v) if (o->f < 0) o->f = (v)
    DEF(n_layer, L); DEF(n_embd, E); DEF(n_head, H); DEF(n_head_kv, HKV); DEF(head_dim, HD);
    DEF(n_expert, X); DEF(n_expert_used, XU); DEF(ctx, C); DEF(rope_theta, RT); DEF(eps, EPS);
    DEF(ff_dense, FFD > 0 ? FFD : 3 * o->n_embd);
#undef DEF
    if (!o->ff) { o->ff = xmalloc(sizeof *o->ff); o->ff[0] = FF; o->n_ff = 1; }
    if (o->n_ff > 1 && o->n_ff != o->n_layer)
        usage_error("--ff: %d values given for %lld layers", o->n_ff, (long long)o->n_layer);
    if (o->n_head % o->n_head_kv) usage_error("--heads %lld is not a multiple of --heads-kv %lld", (long long)o->n_head, (long long)o->n_head_kv);
    if (o->head_dim % 2) usage_error("--head-dim %lld must be even (RoPE rotates halves)", (long long)o->head_dim);
    if (o->n_expert_used > o->n_expert) usage_error("--experts-used %lld exceeds --experts %lld", (long long)o->n_expert_used, (long long)o->n_expert);
    if (o->vocab_real && !o->vocab_file) usage_error("--vocab real needs --vocab-file (node tests/export_vocab.mjs FILE)");
    if (!o->vocab_real && o->vocab_file) usage_error("--vocab-file is only used with --vocab real");
}

/* ------------------------------------------------------------------ tensors */
enum { K_EMBD, K_OUTPUT, K_NORM, K_Q, K_K, K_V, K_O, K_ROUTER, K_GATE, K_UP, K_DOWN };

typedef struct {
    char name[96];
    int n_dims, kind, layer;
    int64_t ne[3];
    uint32_t type;
    float std;
    uint64_t offset, nbytes;
} tensor_t;

static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* llama-quantize's choices (llama_tensor_get_type) for the three mixes, as they come out
 * for Qwen3-30B-A3B (128 experts). Not reproduced: its special case for models with
 * exactly 8 experts (Mixtral: attn_k/attn_v Q8_0, attn_output Q5_K), which would also
 * hit the tiny preset; the runner reads each tensor's type from the file anyway. */
static uint32_t choose_type(const opts_t *o, const tensor_t *t, int *fell_back) {
    uint32_t ty;
    if (t->kind == K_NORM || t->kind == K_ROUTER) ty = GGML_TYPE_F32;
    else if (o->mix == MIX_Q4_K_M) {
        switch (t->kind) {
        case K_OUTPUT: ty = GGML_TYPE_Q6_K; break;
        case K_V: case K_DOWN: ty = use_more_bits(t->layer, (int)o->n_layer) ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K; break;
        default: ty = GGML_TYPE_Q4_K;
        }
    } else if (o->mix == MIX_Q8_0) ty = GGML_TYPE_Q8_0;
    else if (o->mix == MIX_Q4_0) ty = t->kind == K_OUTPUT ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_0;
    else ty = (uint32_t)o->type;
    for (int i = 0; i < o->n_ov; i++)
        if (regexec(&o->ov[i].re, t->name, 0, NULL, 0) == 0) { ty = o->ov[i].type; break; }
    /* llama.cpp's fallback for rows that are not a whole number of blocks */
    *fell_back = 0;
    if (t->ne[0] % gguf_type_get(ty)->blck_size) {
        *fell_back = 1;
        switch (ty) {
        case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_IQ4_XS: ty = GGML_TYPE_IQ4_NL; break;
        case GGML_TYPE_Q4_K: ty = GGML_TYPE_Q5_0; break;
        case GGML_TYPE_Q5_K: ty = GGML_TYPE_Q5_1; break;
        case GGML_TYPE_Q6_K: ty = GGML_TYPE_Q8_0; break;
        default: ty = GGML_TYPE_F16;
        }
        if (t->ne[0] % gguf_type_get(ty)->blck_size) ty = GGML_TYPE_F16;
    }
    return ty;
}

static int file_type_of(const opts_t *o) {
    if (o->mix == MIX_Q4_K_M) return 15;
    if (o->mix == MIX_Q8_0) return 7;
    if (o->mix == MIX_Q4_0) return 2;
    switch (o->type) {
    case GGML_TYPE_F32: return 0;    case GGML_TYPE_F16: return 1;     case GGML_TYPE_BF16: return 32;
    case GGML_TYPE_Q8_0: return 7;   case GGML_TYPE_Q4_0: return 2;    case GGML_TYPE_Q4_1: return 3;
    case GGML_TYPE_Q5_0: return 8;   case GGML_TYPE_Q5_1: return 9;    case GGML_TYPE_Q2_K: return 10;
    case GGML_TYPE_Q3_K: return 12;  case GGML_TYPE_Q4_K: return 14;   case GGML_TYPE_Q5_K: return 16;
    case GGML_TYPE_Q6_K: return 18;  case GGML_TYPE_IQ4_NL: return 25; case GGML_TYPE_IQ4_XS: return 30;
    }
    return 0;
}

/* ------------------------------------------------------------------ parallel fill */
typedef struct { int tensor; int64_t row0, nrows; uint64_t chunk; } job_t;
typedef struct {
    const tensor_t *t; const job_t *jobs; size_t n_jobs; atomic_size_t next;
    int fd; uint64_t data_off; uint64_t seed; size_t max_bytes; atomic_int err;
} fill_ctx;

static void fill_rows(const tensor_t *t, uint8_t *dst, int64_t nrows, uint64_t *rng) {
    int64_t n = t->ne[0] * nrows;
    if (t->kind == K_NORM && (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16 || t->type == GGML_TYPE_BF16)) {
        for (int64_t i = 0; i < n; i++) {
            float v = 1.0f + 0.1f * rng_normal(rng);
            if (t->type == GGML_TYPE_F32) memcpy(dst + 4 * i, &v, 4);
            else {
                uint16_t h = t->type == GGML_TYPE_F16 ? gguf_f32_to_f16(v) : gguf_f32_to_bf16(v);
                memcpy(dst + 2 * i, &h, 2);
            }
        }
        return;
    }
    randquant_fill(t->type, dst, n, rng, t->std);
}

static void *fill_worker(void *arg) {
    fill_ctx *c = arg;
    uint8_t *buf = xmalloc(c->max_bytes);
    for (;;) {
        size_t j = atomic_fetch_add(&c->next, 1);
        if (j >= c->n_jobs || atomic_load(&c->err)) break;
        const job_t *jb = &c->jobs[j];
        const tensor_t *t = &c->t[jb->tensor];
        size_t rb = gguf_row_bytes(t->type, t->ne[0]);
        size_t nb = rb * (size_t)jb->nrows;
        uint64_t rng = chunk_seed(c->seed, (uint64_t)jb->tensor, jb->chunk);
        fill_rows(t, buf, jb->nrows, &rng);
        uint64_t off = c->data_off + t->offset + (uint64_t)jb->row0 * rb;
        for (size_t done = 0; done < nb;) {
            ssize_t w = pwrite(c->fd, buf + done, nb - done, (off_t)(off + done));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { atomic_store(&c->err, w < 0 ? errno : EIO); break; }
            done += (size_t)w;
        }
    }
    free(buf);
    return NULL;
}

/* ------------------------------------------------------------------ main */
int main(int argc, char **argv) {
    opts_t o;
    parse_args(&o, argc, argv);
    double t0 = now_s();

    /* vocabulary */
    vocab_t v = {0};
    if (o.vocab_real) {
        read_real_vocab(&v, o.vocab_file);
        if (o.n_vocab < 0) o.n_vocab = 151936;
    } else {
        build_tiny_vocab(&v, 320);
    }
    if (o.n_vocab < 0) o.n_vocab = v.n;
    if (o.n_vocab < v.n)
        usage_error("--n-vocab %lld is smaller than the vocabulary's %lld tokens", (long long)o.n_vocab, (long long)v.n);
    vocab_pad(&v, o.n_vocab);
    int64_t eos = vocab_find(&v, "<|im_end|>"), eot = vocab_find(&v, "<|endoftext|>");
    if (eos < 0 || eot < 0) fail("the vocabulary lacks <|im_end|> or <|endoftext|>");

    /* tensors, in llama.cpp's order */
    const int64_t E = o.n_embd, QD = o.n_head * o.head_dim, KVD = o.n_head_kv * o.head_dim;
    int cap = 3 + 12 * (int)o.n_layer, nt = 0;
    tensor_t *T = xmalloc(sizeof *T * cap);
#define ADD(nm_fmt, lay, kind_, nd, a, b, c, sd) do { tensor_t *t_ = &T[nt++]; memset(t_, 0, sizeof *t_); \
        snprintf(t_->name, sizeof t_->name, nm_fmt, lay); t_->layer = lay; t_->kind = kind_; t_->n_dims = nd; \
        t_->ne[0] = a; t_->ne[1] = b; t_->ne[2] = c; t_->std = (float)(sd); } while (0)
    /* "%.0d" of 0 prints nothing: the names without a layer number use the same macro */
    const double emb_std = o.tied ? o.output_gain / sqrt((double)E) : 1.0;
    ADD("token_embd.weight%.0d", 0, K_EMBD, 2, E, o.n_vocab, 1, emb_std);
    for (int il = 0; il < o.n_layer; il++) {
        int64_t ff = o.ff[o.n_ff > 1 ? il : 0];
        ADD("blk.%d.attn_norm.weight", il, K_NORM, 1, E, 1, 1, 0);
        ADD("blk.%d.attn_q.weight", il, K_Q, 2, E, QD, 1, 1 / sqrt((double)E));
        ADD("blk.%d.attn_k.weight", il, K_K, 2, E, KVD, 1, 1 / sqrt((double)E));
        ADD("blk.%d.attn_v.weight", il, K_V, 2, E, KVD, 1, 1 / sqrt((double)E));
        ADD("blk.%d.attn_output.weight", il, K_O, 2, QD, E, 1, 1 / sqrt((double)QD));
        ADD("blk.%d.attn_q_norm.weight", il, K_NORM, 1, o.head_dim, 1, 1, 0);
        ADD("blk.%d.attn_k_norm.weight", il, K_NORM, 1, o.head_dim, 1, 1, 0);
        ADD("blk.%d.ffn_norm.weight", il, K_NORM, 1, E, 1, 1, 0);
        ADD("blk.%d.ffn_gate_inp.weight", il, K_ROUTER, 2, E, o.n_expert, 1, o.router_gain / sqrt((double)E));
        ADD("blk.%d.ffn_gate_exps.weight", il, K_GATE, 3, E, ff, o.n_expert, 1 / sqrt((double)E));
        ADD("blk.%d.ffn_up_exps.weight", il, K_UP, 3, E, ff, o.n_expert, 1 / sqrt((double)E));
        ADD("blk.%d.ffn_down_exps.weight", il, K_DOWN, 3, ff, E, o.n_expert, 1 / sqrt((double)ff));
    }
    ADD("output_norm.weight%.0d", 0, K_NORM, 1, E, 1, 1, 0);
    if (!o.tied) ADD("output.weight%.0d", 0, K_OUTPUT, 2, E, o.n_vocab, 1, o.output_gain / sqrt((double)E));
#undef ADD
    int n_fallback = 0;
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        int fb;
        T[i].type = choose_type(&o, &T[i], &fb);
        if (fb) {
            if (!o.quiet && n_fallback < 8)
                fprintf(stderr, "gen_model: %s: row of %lld is not a whole number of blocks, using %s\n",
                        T[i].name, (long long)T[i].ne[0], tname(T[i].type));
            n_fallback++;
        }
        off = (off + o.alignment - 1) / o.alignment * o.alignment;
        T[i].offset = off;
        T[i].nbytes = gguf_row_bytes(T[i].type, T[i].ne[0]) * (uint64_t)(T[i].ne[1] * T[i].ne[2]);
        off += T[i].nbytes;
    }
    uint64_t data_size = off;

    /* metadata, as llama.cpp's converter + quantizer write it */
    kvs_t kv = {0};
    char key[128];
    kv_str(&kv, "general.architecture", "qwen3moe");
    kv_str(&kv, "general.name", o.name ? o.name : "qwen3moe-synthetic");
#define K(s) (snprintf(key, sizeof key, "qwen3moe.%s", s), key)
    kv_u32(&kv, K("block_count"), (uint32_t)o.n_layer);
    kv_u32(&kv, K("context_length"), (uint32_t)o.ctx);
    kv_u32(&kv, K("embedding_length"), (uint32_t)E);
    kv_u32(&kv, K("feed_forward_length"), (uint32_t)o.ff_dense);
    kv_u32(&kv, K("attention.head_count"), (uint32_t)o.n_head);
    kv_u32(&kv, K("attention.head_count_kv"), (uint32_t)o.n_head_kv);
    kv_f32(&kv, K("rope.freq_base"), (float)o.rope_theta);
    kv_f32(&kv, K("attention.layer_norm_rms_epsilon"), (float)o.eps);
    kv_u32(&kv, K("expert_used_count"), (uint32_t)o.n_expert_used);
    kv_u32(&kv, K("expert_count"), (uint32_t)o.n_expert);
    kv_u32(&kv, K("attention.key_length"), (uint32_t)o.head_dim);
    kv_u32(&kv, K("attention.value_length"), (uint32_t)o.head_dim);
    if (o.n_ff > 1) {
        kv_arr_head(&kv, K("expert_feed_forward_length"), GGUF_KV_INT32, (uint64_t)o.n_ff);
        for (int i = 0; i < o.n_ff; i++) buf_i32(&kv.b, (int32_t)o.ff[i]);
    } else {
        kv_u32(&kv, K("expert_feed_forward_length"), (uint32_t)o.ff[0]);
    }
#undef K
    kv_u32(&kv, "general.file_type", (uint32_t)file_type_of(&o));
    kv_u32(&kv, "general.quantization_version", 2);
    if (o.alignment_set) kv_u32(&kv, "general.alignment", (uint32_t)o.alignment);
    kv_str(&kv, "tokenizer.ggml.model", "gpt2");
    kv_str(&kv, "tokenizer.ggml.pre", "qwen2");
    kv_arr_head(&kv, "tokenizer.ggml.tokens", GGUF_KV_STRING, (uint64_t)v.n);
    for (int64_t i = 0; i < v.n; i++) buf_str(&kv.b, v.tok[i], v.len[i]);
    kv_arr_head(&kv, "tokenizer.ggml.token_type", GGUF_KV_INT32, (uint64_t)v.n);
    for (int64_t i = 0; i < v.n; i++) buf_i32(&kv.b, v.type[i]);
    kv_arr_head(&kv, "tokenizer.ggml.merges", GGUF_KV_STRING, (uint64_t)v.n_merges);
    for (int64_t i = 0; i < v.n_merges; i++) buf_str(&kv.b, v.merge[i], v.mlen[i]);
    kv_u32(&kv, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    kv_u32(&kv, "tokenizer.ggml.padding_token_id", (uint32_t)eot);
    kv_u32(&kv, "tokenizer.ggml.bos_token_id", (uint32_t)eot);
    kv_bool(&kv, "tokenizer.ggml.add_bos_token", 0);
    kv_str(&kv, "tokenizer.chat_template", v.chat_template);

    /* header: magic, version, counts, KVs, tensor infos, padding */
    buf_t h = {0};
    buf_put(&h, "GGUF", 4);
    buf_u32(&h, (uint32_t)o.version);
    buf_u64(&h, (uint64_t)nt);
    buf_u64(&h, kv.n);
    buf_put(&h, kv.b.p, kv.b.n);
    for (int i = 0; i < nt; i++) {
        buf_str(&h, T[i].name, strlen(T[i].name));
        buf_u32(&h, (uint32_t)T[i].n_dims);
        for (int d = 0; d < T[i].n_dims; d++) buf_u64(&h, (uint64_t)T[i].ne[d]);
        buf_u32(&h, T[i].type);
        buf_u64(&h, T[i].offset);
    }
    while (h.n % o.alignment) buf_u8(&h, 0);
    uint64_t data_off = h.n, total = data_off + data_size;

    /* write: temp file, preallocated, header, then the data from the workers */
    size_t pl = strlen(o.out) + 32;
    char *tmp = xmalloc(pl);
    snprintf(tmp, pl, "%s.tmp.%ld", o.out, (long)getpid());
    int fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) fail("cannot create %s: %s", tmp, strerror(errno));
    if (ftruncate(fd, (off_t)total)) { int e = errno; unlink(tmp); fail("cannot size %s: %s", tmp, strerror(e)); }
    int fe = posix_fallocate(fd, 0, (off_t)total);
    if (fe == ENOSPC || fe == EFBIG) { unlink(tmp); fail("%s: not enough disk space for %.2f GiB", tmp, total / 1073741824.0); }
    if (pwrite(fd, h.p, h.n, 0) != (ssize_t)h.n) { int e = errno; unlink(tmp); fail("write %s: %s", tmp, strerror(e)); }

    /* jobs: about 2 MiB of rows each, cut per tensor only (not per thread) */
    const size_t CHUNK = (size_t)2 << 20;
    size_t n_jobs = 0, cap_jobs = 1024, max_bytes = CHUNK;
    job_t *jobs = xmalloc(sizeof *jobs * cap_jobs);
    for (int i = 0; i < nt; i++) {
        size_t rb = gguf_row_bytes(T[i].type, T[i].ne[0]);
        int64_t rows = T[i].ne[1] * T[i].ne[2];
        int64_t per = rb >= CHUNK ? 1 : (int64_t)(CHUNK / rb);
        if (rb > max_bytes) max_bytes = rb;
        uint64_t ch = 0;
        for (int64_t r = 0; r < rows; r += per) {
            if (n_jobs == cap_jobs) jobs = xrealloc(jobs, sizeof *jobs * (cap_jobs *= 2));
            jobs[n_jobs++] = (job_t){i, r, r + per <= rows ? per : rows - r, ch++};
        }
    }
    int nth = o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nth < 1) nth = 1;
    if ((size_t)nth > n_jobs) nth = n_jobs ? (int)n_jobs : 1;
    fill_ctx ctx = {.t = T, .jobs = jobs, .n_jobs = n_jobs, .fd = fd, .data_off = data_off, .seed = o.seed,
                    .max_bytes = max_bytes};
    atomic_init(&ctx.next, 0);
    atomic_init(&ctx.err, 0);
    pthread_t *th = xmalloc(sizeof *th * nth);
    for (int i = 0; i < nth; i++)
        if (pthread_create(&th[i], NULL, fill_worker, &ctx)) fail("cannot start a thread");
    for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
    if (atomic_load(&ctx.err)) { unlink(tmp); fail("write %s: %s", tmp, strerror(atomic_load(&ctx.err))); }
    if (close(fd)) { int e = errno; unlink(tmp); fail("close %s: %s", tmp, strerror(e)); }
    if (rename(tmp, o.out)) { int e = errno; unlink(tmp); fail("rename %s -> %s: %s", tmp, o.out, strerror(e)); }

    if (!o.quiet) {
        double dt = now_s() - t0;
        fprintf(stderr,
                "gen_model: %s: GGUF v%d, %d tensors, %lld KVs, %.3f GiB (%.1f MiB metadata), vocab %lld "
                "(%lld merges), %lld layers, embd %lld, heads %lld/%lld x %lld, experts %lld/%lld, %s%s, "
                "%d threads, %.2f s (%.0f MiB/s)\n",
                o.out, o.version, nt, (long long)kv.n, total / 1073741824.0, h.n / 1048576.0, (long long)v.n,
                (long long)v.n_merges, (long long)o.n_layer, (long long)E, (long long)o.n_head,
                (long long)o.n_head_kv, (long long)o.head_dim, (long long)o.n_expert, (long long)o.n_expert_used,
                o.mix == MIX_Q4_K_M ? "mix q4_k_m" : o.mix == MIX_Q8_0 ? "mix q8_0" : o.mix == MIX_Q4_0 ? "mix q4_0" : tname(o.type),
                o.tied ? ", tied" : "", nth, dt, total / 1048576.0 / (dt > 0 ? dt : 1e-9));
        if (n_fallback > 8) fprintf(stderr, "gen_model: (%d tensors fell back in all)\n", n_fallback);
    }
    return 0;
}
