/* gguf_dump — print a GGUF file's header, metadata and tensor infos with gguf.h,
 * or the reader's error ("error: <file>: ...") and exit status 1.
 *
 *   build/gguf_dump [--check] FILE.gguf
 *
 *   build/gguf_dump --prefixes FILE.gguf [STEP]
 *   build/gguf_dump --mutate N SEED FILE.gguf
 *
 * --prefixes parses every prefix of the file (0..size bytes, or every STEP-th, each in its own
 * exact-size heap buffer so a sanitizer sees any over-read): a prefix must fail
 * with a message naming an offset until it holds all tensor data, then parse.
 * --mutate parses N copies with random byte/bit damage (a small in-process fuzz)
 * and touches the data of every tensor that parses; it must never crash.
 *
 * --check also looks every key and tensor name up through the hash tables,
 * exercises the typed getters, and dequantizes the first and last row of every
 * tensor of a supported type (so sanitizer builds touch all tensor data bounds).
 *
 * One line per item, parsed by tests/make_bad_gguf.py crosscheck:
 *   kv @OFFSET KEY TYPE VALUE          scalars; strings quoted with \xNN escapes
 *   kv @OFFSET KEY ARRAY[ET x N] [v, ...]   first 8 elements; nested arrays skipped
 *   tensor @OFFSET NAME TYPE [ne0, ...] offset OFF nbytes N */
#define GGUF_IMPLEMENTATION
#include "gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void print_str(const char *s, uint64_t n, uint64_t max) {
    putchar('"');
    for (uint64_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') putchar(c);
        else printf("\\x%02x", c);
    }
    putchar('"');
    if (n > max) printf("...");
}

static void print_scalar(uint32_t type, const uint8_t *p) {
    switch (type) {
    case GGUF_KV_UINT8: printf("%u", p[0]); break;
    case GGUF_KV_INT8: printf("%d", (int8_t)p[0]); break;
    case GGUF_KV_BOOL: printf("%s", p[0] ? "true" : "false"); break;
    case GGUF_KV_UINT16: { uint16_t x; memcpy(&x, p, 2); printf("%u", x); break; }
    case GGUF_KV_INT16: { int16_t x; memcpy(&x, p, 2); printf("%d", x); break; }
    case GGUF_KV_UINT32: { uint32_t x; memcpy(&x, p, 4); printf("%" PRIu32, x); break; }
    case GGUF_KV_INT32: { int32_t x; memcpy(&x, p, 4); printf("%" PRId32, x); break; }
    case GGUF_KV_UINT64: { uint64_t x; memcpy(&x, p, 8); printf("%" PRIu64, x); break; }
    case GGUF_KV_INT64: { int64_t x; memcpy(&x, p, 8); printf("%" PRId64, x); break; }
    case GGUF_KV_FLOAT32: { float x; memcpy(&x, p, 4); printf("%.9g", x); break; }
    case GGUF_KV_FLOAT64: { double x; memcpy(&x, p, 8); printf("%.17g", x); break; }
    }
}

static uint8_t *slurp(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, fp) != (size_t)n) { free(b); b = NULL; }
    fclose(fp);
    *size = (size_t)n;
    return b;
}

/* the end of the last tensor's data: shorter prefixes must fail */
static size_t data_end(const gguf_file *f) {
    size_t end = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        size_t e = (size_t)(f->data_offset + f->tensors[i].offset + f->tensors[i].nbytes);
        if (e > end) end = e;
    }
    return end;
}

static int prefixes(const char *path, size_t step) {
    size_t size; uint8_t *full = slurp(path, &size);
    if (!full) { fprintf(stderr, "error: cannot read %s\n", path); return 1; }
    gguf_file f; char err[512];
    if (gguf_parse(&f, full, size, path, err, sizeof err) != 0) { fprintf(stderr, "error: %s\n", err); return 1; }
    const size_t end = data_end(&f) > f.data_offset ? data_end(&f) : (size_t)f.data_offset;
    gguf_close(&f);
    size_t n_fail = 0, n_ok = 0, bad = 0;
    size_t n_tested = 0;
    if (step < 1) step = 1;
    for (size_t len = 0;; len = len + step < size ? len + step : size) {
        n_tested++;
        uint8_t *b = (uint8_t *)malloc(len ? len : 1);
        memcpy(b, full, len);
        int rc = gguf_parse(&f, b, len, "prefix", err, sizeof err);
        if (rc == 0) {
            n_ok++;
            if (len < end) { if (!bad) printf("prefix %zu parsed, but the data ends at %zu\n", len, end); bad++; }
            gguf_close(&f);
        } else {
            n_fail++;
            if (len >= end || !strstr(err, "offset") || strncmp(err, "prefix: ", 8) != 0) {
                if (!bad) printf("prefix %zu: unexpected error: %s\n", len, err);
                bad++;
            }
        }
        free(b);
        if (len == size) break;
    }
    printf("prefixes: %zu tested, %zu failed with an offset, %zu parsed (data ends at %zu), %zu unexpected\n",
           n_tested, n_fail, n_ok, end, bad);
    free(full);
    return bad ? 1 : 0;
}

static int mutate(const char *path, long n, uint64_t seed) {
    size_t size; uint8_t *full = slurp(path, &size);
    if (!full || size == 0) { fprintf(stderr, "error: cannot read %s\n", path); return 1; }
    long n_ok = 0;
    float *row = NULL; size_t row_cap = 0;
    for (long it = 0; it < n; it++) {
        uint8_t *b = (uint8_t *)malloc(size);
        memcpy(b, full, size);
        int k = 1 + (int)(seed % 4);
        for (int j = 0; j < k; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(seed >> 33) % size;
            switch ((seed >> 8) & 3) {
            case 0: b[pos] ^= (uint8_t)(1u << ((seed >> 12) & 7)); break;   /* bit flip */
            case 1: b[pos] = (uint8_t)(seed >> 16); break;                   /* random byte */
            case 2: b[pos] = 0xff; break;
            default: b[pos] = 0; break;
            }
        }
        gguf_file f; char err[512];
        if (gguf_parse(&f, b, size, "mutant", err, sizeof err) == 0) {
            n_ok++;
            for (uint64_t i = 0; i < f.n_tensors; i++) {
                const gguf_tensor *t = &f.tensors[i];
                if (!gguf_type_get(t->type)->supported) continue;
                if ((size_t)t->ne[0] > row_cap) { row_cap = (size_t)t->ne[0]; row = (float *)realloc(row, row_cap * sizeof(float)); }
                const size_t rb = gguf_row_bytes(t->type, t->ne[0]);
                gguf_dequant_row(t->type, t->data, row, t->ne[0]);
                gguf_dequant_row(t->type, t->data + (t->nbytes / rb - 1) * rb, row, t->ne[0]);
                (void)gguf_find_tensor(&f, t->name);
            }
            for (uint64_t i = 0; i < f.n_kv; i++) (void)gguf_find_kv(&f, f.kv[i].key);
            gguf_close(&f);
        }
        free(b);
    }
    printf("mutate: %ld mutants, %ld parsed, %ld refused, no crash\n", n, n_ok, n - n_ok);
    free(row); free(full);
    return 0;
}

int main(int argc, char **argv) {
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "--prefixes") == 0)
        return prefixes(argv[2], argc == 4 ? (size_t)atol(argv[3]) : 1);
    if (argc == 5 && strcmp(argv[1], "--mutate") == 0) return mutate(argv[4], atol(argv[2]), strtoull(argv[3], NULL, 0));
    int check = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check") == 0) check = 1;
        else if (!path) path = argv[i];
        else path = NULL, i = argc;
    }
    if (!path) { fprintf(stderr, "usage: %s [--check] FILE.gguf\n", argv[0]); return 2; }

    gguf_file f;
    char err[512];
    if (gguf_open(&f, path, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        gguf_close(&f);   /* harmless on a failed open */
        return 1;
    }
    printf("version %u\nalignment %u\ndata_offset %" PRIu64 "\nn_kv %" PRIu64 "\nn_tensors %" PRIu64 "\n",
           f.version, f.alignment, f.data_offset, f.n_kv, f.n_tensors);
    for (uint64_t i = 0; i < f.n_kv; i++) {
        const gguf_kv *kv = &f.kv[i];
        printf("kv @%" PRIu64 " %s ", kv->offset, kv->key);
        if (kv->type == GGUF_KV_STRING) {
            printf("STRING ");
            print_str(kv->v.str.s, kv->v.str.n, 200);
        } else if (kv->type == GGUF_KV_ARRAY) {
            printf("ARRAY[%s x %" PRIu64 "] ", gguf_kv_type_name(kv->arr_type), kv->arr_n);
            if (kv->arr_type == GGUF_KV_ARRAY) {
                printf("(nested arrays, skipped)");
            } else {
                printf("[");
                for (uint64_t j = 0; j < kv->arr_n && j < 8; j++) {
                    if (j) printf(", ");
                    if (kv->arr_type == GGUF_KV_STRING) print_str(kv->arr_str[j].s, kv->arr_str[j].n, 60);
                    else print_scalar(kv->arr_type, kv->arr_data + j * gguf_kv_type_size(kv->arr_type));
                }
                printf(kv->arr_n > 8 ? ", ...]" : "]");
            }
        } else {
            printf("%s ", gguf_kv_type_name(kv->type));
            uint8_t raw[8];
            /* re-serialize the scalar from the parsed union to print it like array elements */
            switch (kv->type) {
            case GGUF_KV_FLOAT32: { float x = (float)kv->v.f; memcpy(raw, &x, 4); break; }
            case GGUF_KV_FLOAT64: memcpy(raw, &kv->v.f, 8); break;
            default: memcpy(raw, &kv->v.u, 8); break;   /* little-endian: low bytes first */
            }
            print_scalar(kv->type, raw);
        }
        printf("\n");
    }
    for (uint64_t i = 0; i < f.n_tensors; i++) {
        const gguf_tensor *t = &f.tensors[i];
        printf("tensor @%" PRIu64 " %s %s [", t->info_offset, t->name, gguf_type_get(t->type)->name);
        for (uint32_t d = 0; d < t->n_dims; d++) printf(d ? ", %" PRId64 : "%" PRId64, t->ne[d]);
        printf("] offset %" PRIu64 " nbytes %" PRIu64 "\n", t->offset, t->nbytes);
    }

    int bad = 0;
    if (check) {
        for (uint64_t i = 0; i < f.n_kv; i++)
            if (gguf_find_kv(&f, f.kv[i].key) != &f.kv[i]) { printf("check: lookup of key '%s' failed\n", f.kv[i].key); bad = 1; }
        for (uint64_t i = 0; i < f.n_tensors; i++)
            if (gguf_find_tensor(&f, f.tensors[i].name) != &f.tensors[i]) { printf("check: lookup of tensor '%s' failed\n", f.tensors[i].name); bad = 1; }
        if (gguf_find_kv(&f, "no.such.key") || gguf_find_tensor(&f, "no.such.tensor")) { printf("check: phantom lookup\n"); bad = 1; }
        int64_t iv; double dv; gguf_str sv; const gguf_kv *av;
        printf("check: get_int(general.alignment)=%d get_float(general.alignment)=%d get_str(general.architecture)=%d "
               "get_arr(tokenizer.ggml.tokens)=%d get_int(missing)=%d\n",
               gguf_get_int(&f, "general.alignment", &iv), gguf_get_float(&f, "general.alignment", &dv),
               gguf_get_str(&f, "general.architecture", &sv), gguf_get_arr(&f, "tokenizer.ggml.tokens", GGUF_KV_STRING, &av),
               gguf_get_int(&f, "no.such.key", &iv));
        double sum = 0;
        int n_rows = 0;
        for (uint64_t i = 0; i < f.n_tensors; i++) {
            const gguf_tensor *t = &f.tensors[i];
            const gguf_type_traits *tt = gguf_type_get(t->type);
            if (!tt->supported) { printf("check: tensor '%s' type %s not dequantizable (fine)\n", t->name, tt->name); continue; }
            const size_t rb = gguf_row_bytes(t->type, t->ne[0]);
            const uint64_t nrows = t->nbytes / rb;
            float *row = (float *)malloc((size_t)t->ne[0] * sizeof(float));
            if (!row) { printf("check: out of memory\n"); return 1; }
            for (int k = 0; k < 2; k++) {
                const uint64_t r = k ? nrows - 1 : 0;
                gguf_dequant_row(t->type, t->data + r * rb, row, t->ne[0]);
                for (int64_t j = 0; j < t->ne[0]; j++) if (isfinite(row[j])) sum += row[j];
                n_rows++;
            }
            free(row);
        }
        printf("check: %s, dequantized %d rows (finite sum %.6g)\n", bad ? "FAILED" : "lookups ok", n_rows, sum);
    }
    gguf_close(&f);
    gguf_close(&f);   /* twice must be harmless */
    return bad ? 1 : 0;
}
