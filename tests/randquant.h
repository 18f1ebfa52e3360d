/* randquant.h — random but well-formed tensor data in any dequantizable ggml type.
 *
 *   void randquant_fill(uint32_t type, void *dst, int64_t n_elems, uint64_t *rng, float target_std);
 *
 * Writes n_elems (a multiple of the type's block size) worth of blocks at dst:
 * quant bits are uniformly random; the f16 scale fields (d, dmin, m) are finite
 * and chosen so the dequantized values have about target_std spread and zero mean
 * (K-quant mins are set to cancel the mean of d*sc*q; types without a min get a
 * random sign on d). Each
 * block's scale is jittered by a factor in [0.5, 1.5) so blocks differ.
 * F32/F16/BF16 get approximately normal values (sum of 4 uniforms) of that std.
 * Unsupported types get random bytes.
 *
 * No global state: the rng is the caller's (splitmix64 state; any value works),
 * so threads can fill disjoint ranges with their own states. Header-only, static
 * functions; include after (or without) gguf.h's implementation: it needs only
 * the inline f16/bf16 converters and gguf_type_get from gguf.h.
 * tests/test_dequant checks the spread and finiteness for every type.
 */
#ifndef RANDQUANT_H
#define RANDQUANT_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "gguf.h"

static inline uint64_t randquant_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) from 24 random bits */
static inline float randquant_unit(uint64_t *s) { return (float)(randquant_next(s) >> 40) * (1.0f / 16777216.0f); }

static inline void randquant_bytes(uint8_t *p, size_t n, uint64_t *s) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { uint64_t r = randquant_next(s); memcpy(p + i, &r, 8); }
    if (i < n) { uint64_t r = randquant_next(s); memcpy(p + i, &r, n - i); }
}

static inline void randquant_put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void randquant_f16(uint8_t *p, float v) { randquant_put16(p, gguf_f32_to_f16(v)); }

/* Standard deviation, in units of d, of the dequantized values of a block with
 * uniformly random quant bits and (for types with a min) the mean-cancelling
 * min factor below. Derived from the moments of the uniform integer fields:
 *   Q4_0: q-8 in -8..7               sqrt(255/12)            = 4.61
 *   Q5_0: q-16 in -16..15            sqrt(1023/12)           = 9.23
 *   Q8_0: int8                       sqrt(65535/12)          = 73.9
 *   Q2_K: sc*q - 1.5*m, sc,m 0..15, q 0..3                   = 13.9
 *   Q3_K: (sc-32)*(q in -4..3)       sqrt(341.5*5.5)         = 43.3
 *   Q4_K: sc*q - 7.5*m, sc,m 0..63, q 0..15                  = 258.3
 *   Q5_K: sc*q - 15.5*m, q 0..31                             = 526.9
 *   Q6_K: int8 sc * (q-32 in -32..31) sqrt(5461.5*341.5)    = 1365.7
 *   IQ4_NL: table values              rms                    = 67.4
 *   IQ4_XS: (ls-32) * table           sqrt(341.5)*67.4       = 1246
 * The jitter u in [0.5,1.5) adds a factor sqrt(E[u^2]) = 1.04. */
static inline void randquant_fill(uint32_t type, void *dst, int64_t n_elems, uint64_t *rng, float target_std) {
    uint8_t *p = (uint8_t *)dst;
    const gguf_type_traits *tt = gguf_type_get(type);
    if (!tt || n_elems <= 0) return;
    const int64_t nb = n_elems / tt->blck_size;
    const size_t ts = (size_t)tt->type_size;
    const float t = target_std / 1.04f;

    if (type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) {
        /* Irwin-Hall: sum of 4 uniforms has variance 4/12; scale to target_std */
        const float k = target_std * 1.7320508f / 65536.0f;
        for (int64_t i = 0; i < n_elems; i++) {
            uint64_t r = randquant_next(rng);
            float v = ((float)((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48)) - 131070.0f) * k;
            if (type == GGML_TYPE_F32) memcpy(p + 4 * i, &v, 4);
            else if (type == GGML_TYPE_F16) randquant_put16(p + 2 * i, gguf_f32_to_f16(v));
            else randquant_put16(p + 2 * i, gguf_f32_to_bf16(v));
        }
        return;
    }

    randquant_bytes(p, (size_t)nb * ts, rng);
    float unit;   /* std of one block in units of d */
    float minf = 0;  /* min = minf * d (0: no min field) */
    switch (type) {
    case GGML_TYPE_Q4_0: unit = 4.61f; break;
    case GGML_TYPE_Q4_1: unit = 4.61f; minf = -7.5f; break;   /* y = q*d + m */
    case GGML_TYPE_Q5_0: unit = 9.23f; break;
    case GGML_TYPE_Q5_1: unit = 9.23f; minf = -15.5f; break;
    case GGML_TYPE_Q8_0: unit = 73.9f; break;
    case GGML_TYPE_Q2_K: unit = 13.9f; minf = 1.5f; break;    /* y = d*sc*q - dmin*m */
    case GGML_TYPE_Q3_K: unit = 43.3f; break;
    case GGML_TYPE_Q4_K: unit = 258.3f; minf = 7.5f; break;
    case GGML_TYPE_Q5_K: unit = 526.9f; minf = 15.5f; break;
    case GGML_TYPE_Q6_K: unit = 1365.7f; break;
    case GGML_TYPE_IQ4_NL: unit = 67.4f; break;
    case GGML_TYPE_IQ4_XS: unit = 1246.0f; break;
    default: return;   /* unsupported: random bytes */
    }
    const float base = t / unit;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t *b = p + (size_t)i * ts;
        /* one draw: 24 bits for the jitter, bit 0 for the sign. Types without a min get
         * d of either sign, as llama.cpp's quantizers give them: a positive d on every
         * block would shift each weight by d * mean(q), which is not zero for these
         * integer fields (Q4_0: q-8 has mean -0.5, IQ4 tables -5.9), so every matrix
         * would add a common direction to its output and the router would see nearly
         * the same input for every token. */
        const uint64_t r = randquant_next(rng);
        float d = base * (0.5f + (float)(r >> 40) * (1.0f / 16777216.0f));
        if (minf == 0 && (r & 1)) d = -d;
        switch (type) {
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q8_0: case GGML_TYPE_IQ4_NL:
        case GGML_TYPE_IQ4_XS:
            randquant_f16(b, d); break;
        case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K:
            randquant_f16(b, d); randquant_f16(b + 2, minf * d); break;
        case GGML_TYPE_Q2_K:
            randquant_f16(b + 80, d); randquant_f16(b + 82, minf * d); break;
        case GGML_TYPE_Q3_K: randquant_f16(b + 108, d); break;
        case GGML_TYPE_Q6_K: randquant_f16(b + 208, d); break;
        }
    }
}
#endif
