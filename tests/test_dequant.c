/* test_dequant — writes random blocks of every supported quant type together with
 * gguf.h's dequantization of them, for tests/dequant_ref.py to compare with
 * llama.cpp's gguf-py; checks by itself what needs no reference (randquant's
 * spread and finiteness, row vs per-block dequantization, f16 round trips).
 *
 *   build/test_dequant OUT.bin     prints TAP lines, writes the records to OUT.bin
 *   build/test_dequant --bench     dequantization speed per type (not a test)
 *
 * OUT.bin: "DQR1", then records: u32 kind, u32 type, u64 count, then
 *   kind 0 (dequant): count blocks of raw bytes, then count*blck_size f32 from gguf.h
 *   kind 1 (f32->f16/bf16): count f32 inputs, count u16 f16, count u16 bf16 */
#define GGUF_IMPLEMENTATION
#include "gguf.h"
#include "tests/randquant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int n_fail;
#define CHECK(cond, ...) do { if (cond) { printf("ok - "); } else { printf("not ok - "); n_fail++; } \
                              printf(__VA_ARGS__); printf("\n"); } while (0)

static const uint32_t types[] = {
    GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
    GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
    GGML_TYPE_Q6_K, GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS,
};
#define N_TYPES (int)(sizeof types / sizeof types[0])

/* byte offsets of the f16 scale fields in each block */
static int f16_fields(uint32_t type, int off[2]) {
    switch (type) {
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q8_0: case GGML_TYPE_IQ4_NL: case GGML_TYPE_IQ4_XS:
        off[0] = 0; return 1;
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K:
        off[0] = 0; off[1] = 2; return 2;
    case GGML_TYPE_Q2_K: off[0] = 80; off[1] = 82; return 2;
    case GGML_TYPE_Q3_K: off[0] = 108; return 1;
    case GGML_TYPE_Q6_K: off[0] = 208; return 1;
    }
    return 0;
}

/* extreme f16 scale values: zeros, subnormals, smallest normal, largest finite, inf, NaN */
static const uint16_t f16_special[] = { 0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0xfbff,
                                        0x3c00, 0xbc00, 0x7c00, 0xfc00, 0x7e00, 0x7d01, 0x1400 };
#define N_SPECIAL (int)(sizeof f16_special / sizeof f16_special[0])

static void put_rec(FILE *fp, uint32_t kind, uint32_t type, uint64_t count) {
    fwrite(&kind, 4, 1, fp); fwrite(&type, 4, 1, fp); fwrite(&count, 8, 1, fp);
}

/* Build the test blocks of one quant type: randquant blocks at several spreads,
 * fully random bytes (random scales: inf, NaN, subnormal, huge), all-0 / all-1
 * blocks, and each scale field set to each extreme value. Returns the count. */
static int64_t make_blocks(uint32_t type, uint8_t *buf, uint64_t *rng) {
    const gguf_type_traits *tt = gguf_type_get(type);
    const size_t ts = (size_t)tt->type_size;
    const int bs = tt->blck_size;
    int64_t nb = 0;
    static const float stds[] = { 1.0f, 0.02f, 1e-3f, 100.0f, 3e4f };
    static const int counts[] = { 512, 256, 128, 64, 16 };
    for (int s = 0; s < 5; s++) { randquant_fill(type, buf + nb * ts, (int64_t)counts[s] * bs, rng, stds[s]); nb += counts[s]; }
    randquant_bytes(buf + nb * ts, 512 * ts, rng); nb += 512;
    memset(buf + nb * ts, 0, ts); nb++;
    memset(buf + nb * ts, 0xff, ts); nb++;
    int off[2]; int nf = f16_fields(type, off);
    for (int f = 0; f < nf; f++)
        for (int k = 0; k < N_SPECIAL; k++) {
            randquant_fill(type, buf + nb * ts, bs, rng, 1.0f);
            memcpy(buf + nb * ts + off[f], &f16_special[k], 2);
            nb++;
        }
    return nb;
}

static void check_randquant(void) {
    const int64_t n = 1 << 16;
    float *y = (float *)malloc(n * sizeof(float));
    uint8_t *q = (uint8_t *)malloc(n * 4);
    uint64_t rng = 12345;
    for (int ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = types[ti];
        const char *nm = gguf_type_get(type)->name;
        static const float tgt[] = { 0.02f, 1.0f };
        for (int s = 0; s < 2; s++) {
            randquant_fill(type, q, n, &rng, tgt[s]);
            gguf_dequant_row(type, q, y, n);
            double sum = 0, sum2 = 0; int finite = 1;
            for (int64_t i = 0; i < n; i++) { if (!isfinite(y[i])) finite = 0; sum += y[i]; sum2 += (double)y[i] * y[i]; }
            const double mean = sum / n, sd = sqrt(sum2 / n - mean * mean);
            const double ratio = sd / tgt[s];
            /* mean within 6% of the std (K-quant min jitter gives ~2% by chance; an
             * uncentred field such as Q4_0 with d > 0 everywhere gives ~10%) */
            CHECK(finite && ratio > 0.8 && ratio < 1.25 && fabs(mean) < 0.06 * tgt[s],
                  "randquant %s std %g: got std %.4g (x%.3f), mean %.3g, %s", nm, tgt[s], sd, ratio, mean,
                  finite ? "all finite" : "NON-FINITE values");
        }
    }
    free(y); free(q);
}

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }

static void bench(void) {
    const int64_t n = 1 << 22;
    float *y = (float *)malloc(n * sizeof(float));
    uint8_t *q = (uint8_t *)malloc(n * 4);
    uint64_t rng = 1;
    for (int ti = 0; ti < N_TYPES; ti++) {
        randquant_fill(types[ti], q, n, &rng, 1.0f);
        double best = 1e9;
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            gguf_dequant_row(types[ti], q, y, n);
            double t = now() - t0; if (t < best) best = t;
        }
        double t0 = now();
        randquant_fill(types[ti], q, n, &rng, 1.0f);
        double tf = now() - t0;
        printf("%-7s dequant %7.0f Melem/s (%6.2f GB/s in)   randquant_fill %6.2f GB/s out\n", gguf_type_get(types[ti])->name,
               n / best / 1e6, gguf_row_bytes(types[ti], n) / best / 1e9, gguf_row_bytes(types[ti], n) / tf / 1e9);
    }
    free(y); free(q);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--bench") == 0) { bench(); return 0; }
    if (argc != 2) { fprintf(stderr, "usage: %s OUT.bin | --bench\n", argv[0]); return 2; }
    FILE *fp = fopen(argv[1], "wb");
    if (!fp) { perror(argv[1]); return 1; }
    fwrite("DQR1", 4, 1, fp);
    uint64_t rng = 0x5eed;

    /* type table sanity: the 15 supported, sizes as ggml */
    int nsup = 0;
    for (uint32_t t = 0; t < 64; t++) if (gguf_type_get(t) && gguf_type_get(t)->supported) nsup++;
    CHECK(nsup == 15 && gguf_type_get(4) == NULL && gguf_type_get(31) == NULL && gguf_type_get(43) == NULL &&
          gguf_row_bytes(GGML_TYPE_Q4_K, 2048) == 8 * 144 && gguf_row_bytes(GGML_TYPE_Q6_K, 768) == 3 * 210,
          "type table: %d supported types, removed ids unknown, row sizes", nsup);

    const size_t maxbytes = (size_t)4096 * 292;
    uint8_t *buf = (uint8_t *)malloc(maxbytes);
    float *y = (float *)malloc(4096 * 256 * sizeof(float));
    float *y2 = (float *)malloc(256 * sizeof(float));
    for (int ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = types[ti];
        const gguf_type_traits *tt = gguf_type_get(type);
        int64_t nb;
        if (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) {
            nb = 65536;   /* every bit pattern */
            for (int64_t i = 0; i < nb; i++) { uint16_t h = (uint16_t)i; memcpy(buf + 2 * i, &h, 2); }
        } else if (type == GGML_TYPE_F32) {
            nb = 65536;
            randquant_fill(type, buf, 32768, &rng, 1.0f);
            randquant_bytes(buf + 4 * 32768, 4 * 32768, &rng);
        } else {
            nb = make_blocks(type, buf, &rng);
        }
        const int64_t n = nb * tt->blck_size;
        gguf_dequant_row(type, buf, y, n);
        /* one block at a time must give the same as the whole row */
        int same = 1;
        for (int64_t b = 0; b < nb && b < 4096; b++) {
            gguf_dequant_row(type, buf + b * tt->type_size, y2, tt->blck_size);
            if (memcmp(y2, y + b * tt->blck_size, tt->blck_size * sizeof(float))) { same = 0; break; }
        }
        CHECK(same, "%s: dequantizing block by block equals dequantizing the whole row (%lld blocks)", tt->name, (long long)nb);
        put_rec(fp, 0, type, (uint64_t)nb);
        fwrite(buf, tt->type_size, (size_t)nb, fp);
        fwrite(y, sizeof(float), (size_t)n, fp);
    }

    /* f32 -> f16 / bf16 conversion inputs: random bit patterns over the whole range,
     * values near f16's limits and rounding ties, specials */
    {
        const int nr = 200000;
        float *x = (float *)malloc((nr + 20000) * sizeof(float));
        int k = 0;
        for (int i = 0; i < nr / 2; i++) { uint32_t u = (uint32_t)randquant_next(&rng); memcpy(&x[k++], &u, 4); }
        for (int i = 0; i < nr / 2; i++) {   /* exponents in and around f16's range */
            uint32_t u = (uint32_t)randquant_next(&rng);
            u = (u & 0x807fffffu) | ((uint32_t)(95 + (u >> 23) % 50) << 23);
            memcpy(&x[k++], &u, 4);
        }
        for (uint32_t h = 0; h < 0x7c00; h += 7) {   /* exact f16 values and the ties between them */
            float a = gguf_f16_to_f32((uint16_t)h), b = gguf_f16_to_f32((uint16_t)(h + 1));
            { x[k++] = a; x[k++] = -(a + (b - a) * 0.5f); }
        }
        const float sp[] = { 65504.0f, 65519.0f, 65519.996f, 65520.0f, 1e10f, INFINITY, -INFINITY, NAN,
                             5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f, 1e-45f, 0.0f, -0.0f };
        for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) x[k++] = sp[i];
        uint16_t *h = (uint16_t *)malloc(k * 2), *bf = (uint16_t *)malloc(k * 2);
        int rt = 1;
        for (int i = 0; i < k; i++) {
            h[i] = gguf_f32_to_f16(x[i]); bf[i] = gguf_f32_to_bf16(x[i]);
            /* exact f16 values survive the round trip */
            float back = gguf_f16_to_f32(h[i]);
            if (!isnan(back) && gguf_f32_to_f16(back) != h[i]) rt = 0;
        }
        CHECK(rt, "f16 -> f32 -> f16 round trip is exact (%d values)", k);
        put_rec(fp, 1, 0, (uint64_t)k);
        fwrite(x, 4, k, fp); fwrite(h, 2, k, fp); fwrite(bf, 2, k, fp);
        free(x); free(h); free(bf);
    }
    fclose(fp);
    free(buf); free(y); free(y2);

    check_randquant();
    return n_fail ? 1 : 0;
}
