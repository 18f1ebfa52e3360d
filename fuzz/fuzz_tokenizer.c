/* libFuzzer harness: arbitrary bytes as prompt text, on the real Qwen3
 * vocabulary (a tiny-shape model written by gen_model --vocab real).
 *
 * Input: byte 0 holds flags (bit 0: parse special tokens), the rest is the text.
 * Properties checked on every input:
 *   - every id is inside the vocabulary;
 *   - without special-token parsing no CONTROL token comes out (a user cannot
 *     type <|im_end|> into the conversation);
 *   - round trip: byte-level BPE is lossless, so decoding the ids gives back
 *     the text the tokenizer saw, i.e. the input with invalid UTF-8 replaced
 *     by U+FFFD, whenever that text is already in NFC (the tokenizer
 *     NFC-normalizes, which is not invertible). Specials decode to their own
 *     text (show_control = 1), so the property holds in both modes.
 *   - streaming the decoded pieces through TextStream loses or reorders no byte.
 * Model: $QWEN3MOE_FUZZ_VOCAB_MODEL or build/fuzz-models/real-micro.gguf. */
#include "fuzz_common.h"

static Model g_model;
static Tokenizer g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fuzz_keep_stderr();
    const char *path = getenv("QWEN3MOE_FUZZ_VOCAB_MODEL");
    if (!path) path = "build/fuzz-models/real-micro.gguf";
    model_open(&g_model, path);   /* exits with a message if missing */
    tokenizer_load(&g_tok, &g_model);
    fprintf(stderr, "fuzz_tokenizer: %s, vocab %d, %d special tokens\n", path, g_tok.n_vocab, g_tok.n_specials);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const Tokenizer *t = &g_tok;
    int parse_special = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;

    jmp_buf jb;
    g_die_jump = &jb;
    int code = setjmp(jb);
    FUZZ_CHECK(code == 0, "die(%d) while tokenizing", code);
    int *ids = tokenize(t, text, n, parse_special);
    g_die_jump = NULL;

    size_t cap = 16;
    for (ptrdiff_t i = 0; i < arrlen(ids); i++) cap += (size_t)t->len[ids[i] >= 0 && ids[i] < t->n_vocab ? ids[i] : 0] * 4 + 8;
    char *dec = xmalloc(cap);
    size_t dn = 0;
    TextStream ts = {0};
    for (ptrdiff_t i = 0; i < arrlen(ids); i++) {
        int id = ids[i];
        FUZZ_CHECK(id >= 0 && id < t->n_vocab, "id %d outside [0, %d) at %td", id, t->n_vocab, i);
        if (!parse_special)
            FUZZ_CHECK(t->type[id] != TOKEN_CONTROL, "control token %d (%s) from text without special parsing", id, t->text[id]);
        int k = token_piece(t, id, dec + dn, 1);
        FUZZ_CHECK(k >= 0 && (size_t)k <= (size_t)t->len[id] * 4 + 8, "piece %d: %d bytes", id, k);
        stream_push(&ts, dec + dn, k);
        dn += (size_t)k;
    }
    stream_finish(&ts);
    FUZZ_CHECK((size_t)arrlen(ts.collected) == dn && (dn == 0 || memcmp(ts.collected, dec, dn) == 0),
               "TextStream changed the bytes: %td vs %zu", arrlen(ts.collected), dn);
    arrfree(ts.collected);

    /* round trip */
    size_t sn;
    char *san = utf8_sanitize(text, n, &sn);
    FUZZ_CHECK(fuzz_utf8_valid(san, sn), "utf8_sanitize left invalid UTF-8");
    if (fuzz_utf8_valid(text, n)) FUZZ_CHECK(sn == n && memcmp(san, text, n) == 0, "utf8_sanitize changed valid UTF-8");
    size_t nn;
    char *nfc = fuzz_nfc(san, sn, &nn);
    if (nfc && nn == sn && memcmp(nfc, san, sn) == 0) {
        if (!(dn == sn && memcmp(dec, san, sn) == 0)) {
            fprintf(stderr, "round trip failed (parse_special=%d):\n  in  (%zu) ", parse_special, sn);
            for (size_t i = 0; i < sn && i < 200; i++) fprintf(stderr, "%02x", (uint8_t)san[i]);
            fprintf(stderr, "\n  out (%zu) ", dn);
            for (size_t i = 0; i < dn && i < 200; i++) fprintf(stderr, "%02x", (uint8_t)dec[i]);
            fprintf(stderr, "\n  ids");
            for (ptrdiff_t i = 0; i < arrlen(ids) && i < 64; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
            abort();
        }
    }
    free(nfc);
    free(san);
    free(dec);
    arrfree(ids);
    return 0;
}
