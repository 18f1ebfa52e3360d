/* libFuzzer harness: the small text routines on the way in and out.
 *   - parse_id_list (--prompt-ids): refuses through die(EXIT_USAGE) only, and
 *     every id it accepts is inside the vocabulary;
 *   - json_str (--json): the output is a valid JSON string (no raw control
 *     characters, valid UTF-8, correct escapes) that decodes back to the input
 *     with each invalid byte replaced by U+FFFD;
 *   - stream_push (streamed replies): the input cut into chunks at fuzzer-chosen
 *     places comes out byte for byte, and no flush ever splits a valid UTF-8
 *     character in two. */
#include "fuzz_common.h"

static void check_ids(const uint8_t *data, size_t size) {
    char *s = xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    const int n_vocab = 1000;
    jmp_buf jb;
    g_die_jump = &jb;
    int code = setjmp(jb);
    if (code == 0) {
        int *ids = parse_id_list(s, n_vocab);
        g_die_jump = NULL;
        for (ptrdiff_t i = 0; i < arrlen(ids); i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab, "id %d", ids[i]);
        arrfree(ids);
    } else {
        g_die_jump = NULL;
        FUZZ_CHECK(code == EXIT_USAGE, "parse_id_list died with %d", code);
    }
    free(s);
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void check_json(const uint8_t *data, size_t size) {
    char *out = NULL;
    size_t on = 0;
    FILE *f = open_memstream(&out, &on);
    json_str(f, (const char *)data, size);
    fclose(f);
    size_t en;
    char *expect = utf8_sanitize((const char *)data, size, &en);
    FUZZ_CHECK(on >= 2 && out[0] == '"' && out[on - 1] == '"', "not a quoted string");
    FUZZ_CHECK(fuzz_utf8_valid(out, on), "JSON output is not valid UTF-8");
    /* decode */
    char *dec = xmalloc(on * 4 + 8);
    size_t dn = 0;
    for (size_t i = 1; i + 1 < on; i++) {
        unsigned char c = (unsigned char)out[i];
        FUZZ_CHECK(c >= 0x20, "raw control byte 0x%02x at %zu", c, i);
        FUZZ_CHECK(c != '"', "unescaped quote at %zu", i);
        if (c != '\\') { dec[dn++] = (char)c; continue; }
        FUZZ_CHECK(i + 2 < on, "escape at the end");
        char e = out[++i];
        switch (e) {
        case '"': dec[dn++] = '"'; break;
        case '\\': dec[dn++] = '\\'; break;
        case '/': dec[dn++] = '/'; break;
        case 'n': dec[dn++] = '\n'; break;
        case 'r': dec[dn++] = '\r'; break;
        case 't': dec[dn++] = '\t'; break;
        case 'b': dec[dn++] = '\b'; break;
        case 'f': dec[dn++] = '\f'; break;
        case 'u': {
            FUZZ_CHECK(i + 4 < on, "short \\u escape");
            int cp = 0;
            for (int k = 1; k <= 4; k++) { int h = hexval(out[i + k]); FUZZ_CHECK(h >= 0, "bad hex digit"); cp = cp * 16 + h; }
            i += 4;
            FUZZ_CHECK(cp < 0xD800 || cp > 0xDFFF, "lone surrogate escape");
            dn += (size_t)utf8_encode(cp, dec + dn);
            break;
        }
        default: FUZZ_CHECK(0, "bad escape \\%c", e);
        }
    }
    FUZZ_CHECK(dn == en && memcmp(dec, expect, en) == 0, "JSON decodes to other text (%zu vs %zu bytes)", dn, en);
    free(dec);
    free(expect);
    free(out);
}

/* The split check holds for any bytes: stream_push resynchronizes after a
 * malformed sequence (the fix in fuzz/README.md's findings). */
static void check_stream(const uint8_t *data, size_t size) {
    if (size < 2) return;
    /* byte 0 seeds the chunk sizes (1..16 bytes) */
    uint32_t seed = data[0] * 2654435761u + 1;
    data++; size--;
    TextStream ts = {0};
    size_t emitted_before = 0;
    for (size_t i = 0; i < size;) {
        seed = seed * 1103515245u + 12345u;
        size_t k = 1 + (seed >> 16) % 16;
        if (k > size - i) k = size - i;
        stream_push(&ts, (const char *)data + i, (int)k);
        i += k;
        /* what was emitted so far is a prefix of the input ... */
        size_t e = (size_t)arrlen(ts.collected);
        FUZZ_CHECK(e <= i && (e == 0 || memcmp(ts.collected, data, e) == 0), "stream emitted other bytes");
        /* ... that never ends inside a complete valid character */
        if (e > emitted_before && e < size) {
            size_t j = e;
            while (j > 0 && j > e - 4 && ((uint8_t)data[j - 1] & 0xC0) == 0x80) j--;
            if (j > 0) {
                size_t start = j - 1;
                int vk = utf8_valid_seq(data + start, size - start);
                FUZZ_CHECK(!(vk > 0 && start + (size_t)vk > e), "stream flushed half a character at %zu", e);
            }
        }
        emitted_before = e;
    }
    stream_finish(&ts);
    FUZZ_CHECK((size_t)arrlen(ts.collected) == size && memcmp(ts.collected, data, size) == 0, "stream lost bytes");
    arrfree(ts.collected);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_ids(data, size);
    check_json(data, size);
    check_stream(data, size);
    return 0;
}
