/* Shared by the libFuzzer harnesses: the whole program as one translation unit
 * (its static functions are reachable), without main() and without CUDA.
 * die() longjmps back to the harness through g_die_jump. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H
#define QWEN3MOE_NO_MAIN
#ifndef QWEN3MOE_NO_CUDA
#define QWEN3MOE_NO_CUDA
#endif
#include "../qwen3moe.c"

/* Where FUZZ_CHECK writes: a copy of stderr taken in LLVMFuzzerInitialize, so
 * that -close_fd_mask=2 can silence the program's own warnings on stderr. */
static int g_fuzz_errfd = 2;
static void fuzz_keep_stderr(void) { int fd = dup(2); if (fd >= 0) g_fuzz_errfd = fd; }

/* A property failed: print why and abort, which libFuzzer reports as a crash
 * (and saves the input). */
#define FUZZ_CHECK(cond, ...)                                                    \
    do {                                                                         \
        if (!(cond)) {                                                           \
            dprintf(g_fuzz_errfd, "fuzz property failed: %s (%s:%d)\n  ", #cond, \
                    __FILE__, __LINE__);                                         \
            dprintf(g_fuzz_errfd, __VA_ARGS__);                                  \
            dprintf(g_fuzz_errfd, "\n");                                         \
            abort();                                                             \
        }                                                                        \
    } while (0)

/* Frees what tokenizer_load allocated before die() jumped out of it. The
 * token texts are allocated in order and the loop stops at the first token
 * longer than 1024 bytes, so only text[0..that index) exist; the rest of the
 * array is uninitialised (xmalloc, not xcalloc). */
static void fuzz_tokenizer_free_partial(Tokenizer *t, const Model *m) {
    if (t->text) {
        int upto = t->n_vocab;
        const gguf_kv *toks = kv_find(m, "tokenizer.ggml.tokens");
        for (int i = 0; toks && toks->arr_str && i < t->n_vocab; i++)
            if (toks->arr_str[i].n > 1024) { upto = i; break; }
        for (int i = 0; i < upto; i++) free(t->text[i]);
        free(t->text);
    }
    free(t->len); free(t->type);
    shfree(t->ids); shfree(t->ranks); arrfree(t->specials);
    if (t->md) pcre2_match_data_free(t->md);
    if (t->re) pcre2_code_free(t->re);
    memset(t, 0, sizeof *t);
}

/* Is s[0..n) valid UTF-8 (utf8proc's definition: no surrogates, no overlongs)? */
static int fuzz_utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int k = utf8_valid_seq((const uint8_t *)s + i, n - i);
        if (k <= 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

/* NFC of valid UTF-8 text s (malloc'd, NUL-terminated), or NULL if utf8proc refuses it. */
static char *fuzz_nfc(const char *s, size_t n, size_t *out_n) {
    utf8proc_uint8_t *o = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &o, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (k < 0) { free(o); return NULL; }
    *out_n = (size_t)k;
    return (char *)o;
}
#endif
