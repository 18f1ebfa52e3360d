/* gguf.h — header-only reader for GGUF v2/v3 files and the ggml quant formats.
 *
 * Usage (stb style): every file that needs the API includes gguf.h; exactly one
 * C translation unit does
 *     #define GGUF_IMPLEMENTATION
 *     #include "gguf.h"
 * The header has no dependency besides libc (POSIX mmap for gguf_open); it does
 * NOT use or define stb_ds, so a program that uses stb_ds elsewhere keeps its own
 * STB_DS_IMPLEMENTATION in its own .c file. The declarations compile as C11 and
 * as C++17 (the CUDA file includes this header for the type ids); the
 * implementation is C11 that also compiles as C++.
 *
 * The reader is written for untrusted files: every read is checked against the
 * file size, counts are bounded by the bytes that remain before anything is
 * allocated, sizes use overflow-checked arithmetic, nested arrays have a depth
 * limit. An error fills err with "<file>: <what was expected> at offset N, <what
 * was found>" and the parse returns -1. The file is assumed little-endian, as is
 * the host (x86-64, aarch64); big-endian GGUF files are refused by version check.
 *
 * Dequantization follows ggml's reference definitions bit for bit (checked
 * against llama.cpp's gguf-py NumPy code by tests/t_dequant.sh, under gcc and
 * clang -O3 -march=native): the arithmetic is done in the reference's order, and
 * its products are exact in f32, so FMA contraction cannot change a result.
 *
 * API summary: gguf_type_get / gguf_row_bytes / gguf_dequant_row (quant types);
 * gguf_f16_to_f32 & co (inline); gguf_open / gguf_parse / gguf_close;
 * gguf_find_kv / gguf_find_tensor (hash lookups); typed getters gguf_get_int,
 * gguf_get_float, gguf_get_str, gguf_get_arr, gguf_arr_get_int,
 * gguf_arr_get_float, gguf_str_eq; gguf_kv_type_name / gguf_kv_type_size.
 */
#ifndef GGUF_H
#define GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ggml tensor type ids, as stored in GGUF tensor infos (ggml.h enum ggml_type).
 * 4, 5, 31-33 and 36-38 are removed formats: gguf_type_get() returns NULL. */
enum {
    GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1, GGML_TYPE_Q4_0 = 2, GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6, GGML_TYPE_Q5_1 = 7, GGML_TYPE_Q8_0 = 8, GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10, GGML_TYPE_Q3_K = 11, GGML_TYPE_Q4_K = 12, GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14, GGML_TYPE_Q8_K = 15, GGML_TYPE_IQ2_XXS = 16, GGML_TYPE_IQ2_XS = 17,
    GGML_TYPE_IQ3_XXS = 18, GGML_TYPE_IQ1_S = 19, GGML_TYPE_IQ4_NL = 20, GGML_TYPE_IQ3_S = 21,
    GGML_TYPE_IQ2_S = 22, GGML_TYPE_IQ4_XS = 23, GGML_TYPE_I8 = 24, GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26, GGML_TYPE_I64 = 27, GGML_TYPE_F64 = 28, GGML_TYPE_IQ1_M = 29,
    GGML_TYPE_BF16 = 30, GGML_TYPE_TQ1_0 = 34, GGML_TYPE_TQ2_0 = 35, GGML_TYPE_MXFP4 = 39,
    GGML_TYPE_NVFP4 = 40, GGML_TYPE_Q1_0 = 41, GGML_TYPE_Q2_0 = 42,
    GGML_TYPE_COUNT = 43
};

/* QK_K: elements per K-quant super-block. */
#define GGUF_QK_K 256

typedef struct {
    const char *name;  /* ggml's name: "q4_K", "bf16", ... */
    int blck_size;     /* elements per block */
    int type_size;     /* bytes per block */
    int supported;     /* 1 if gguf_dequant_row handles it */
} gguf_type_traits;

/* Traits of a type id; NULL for an id ggml does not know (or a removed one). */
const gguf_type_traits *gguf_type_get(uint32_t type);
/* Bytes taken by n elements (n a multiple of the block size); 0 for an unknown type. */
size_t gguf_row_bytes(uint32_t type, int64_t n);
/* Dequantize n elements (a multiple of the block size) of a supported type to f32.
 * src needs no alignment. Unsupported types: dst is filled with zeros (the model
 * loader refuses them before it gets here). */
void gguf_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);

/* ---- f16 / bf16 conversions (inline: the CPU matvec calls them per element).
 * Pure integer/float bit work, exact for every input including subnormals, and
 * independent of flush-to-zero modes. f32 -> f16/bf16 rounds to nearest even;
 * NaN stays NaN (quiet), overflow goes to infinity. */
static inline uint32_t gguf__f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float gguf__bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float gguf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t o = (uint32_t)(h & 0x7fffu) << 13;   /* exponent+mantissa in f32 position */
    uint32_t e = o & 0x0f800000u;                  /* the f16 exponent, shifted */
    o += (127u - 15u) << 23;                       /* rebias */
    float r;
    if (e == 0x0f800000u) {                        /* inf / NaN: exponent all ones */
        r = gguf__bits_f32(o + ((128u - 16u) << 23));
    } else if (e == 0) {                           /* zero / subnormal: renormalize by */
        r = gguf__bits_f32(o + (1u << 23)) - gguf__bits_f32(113u << 23); /* subtracting 2^-14 */
    } else {
        r = gguf__bits_f32(o);
    }
    return gguf__bits_f32(gguf__f32_bits(r) | sign);
}

static inline uint16_t gguf_f32_to_f16(float f) {
    uint32_t x = gguf__f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu)); /* NaN */
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  /* >= 65520 rounds to inf */
    if (x >= 0x38800000u) {                                   /* normal f16: >= 2^-14 */
        /* rebias the exponent (-112 << 23) and round the 13 dropped bits to even;
         * a mantissa carry correctly bumps the exponent */
        uint32_t r = x + 0xc8000fffu + ((x >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    /* subnormal f16 (or zero): adding 0.5 puts the value in [0.5, 1), where the f32
     * ulp is 2^-24 = the f16 subnormal step, so the FPU does the rounding (RNE) */
    float t = gguf__bits_f32(x) + 0.5f;
    return (uint16_t)(sign | (gguf__f32_bits(t) - 0x3f000000u));
}

static inline float gguf_bf16_to_f32(uint16_t h) { return gguf__bits_f32((uint32_t)h << 16); }

static inline uint16_t gguf_f32_to_bf16(float f) {
    uint32_t x = gguf__f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* ---- metadata */
enum {
    GGUF_KV_UINT8 = 0, GGUF_KV_INT8 = 1, GGUF_KV_UINT16 = 2, GGUF_KV_INT16 = 3,
    GGUF_KV_UINT32 = 4, GGUF_KV_INT32 = 5, GGUF_KV_FLOAT32 = 6, GGUF_KV_BOOL = 7,
    GGUF_KV_STRING = 8, GGUF_KV_ARRAY = 9, GGUF_KV_UINT64 = 10, GGUF_KV_INT64 = 11,
    GGUF_KV_FLOAT64 = 12, GGUF_KV_COUNT = 13
};
/* "UINT32", "STRING", ...; "?" for an unknown id */
const char *gguf_kv_type_name(uint32_t type);
/* bytes of one scalar element of that type; 0 for STRING / ARRAY / unknown */
size_t gguf_kv_type_size(uint32_t type);

typedef struct { uint64_t n; const char *s; } gguf_str;  /* into the file, not NUL-terminated */

typedef struct {
    char *key;                 /* NUL-terminated copy */
    uint32_t type;             /* GGUF_KV_* */
    /* Scalars. Unsigned integers and BOOL are zero-extended into u, signed ones
     * sign-extended into i (the same 64 bits), FLOAT32/FLOAT64 widened into f. */
    union { uint64_t u; int64_t i; double f; gguf_str str; } v;
    /* Arrays: element type, count, raw little-endian elements (for arrays of
     * strings or of arrays: the start of the serialized elements). */
    uint32_t arr_type; uint64_t arr_n; const uint8_t *arr_data;
    gguf_str *arr_str;         /* arrays of strings: arr_n entries (malloc'd), else NULL;
                                  nested arrays are validated and skipped */
    uint64_t offset;           /* file offset where this KV starts */
} gguf_kv;

typedef struct {
    char *name;                /* NUL-terminated copy */
    uint32_t n_dims;           /* 1..4 */
    int64_t ne[4];             /* ggml order, ne[0] contiguous; unused dims = 1 */
    uint32_t type;             /* GGML_TYPE_* (known; maybe not supported) */
    uint64_t offset;           /* relative to the data section */
    uint64_t nbytes;
    const uint8_t *data;       /* base + data_offset + offset */
    uint64_t info_offset;      /* file offset of this tensor's info */
} gguf_tensor;

typedef struct {
    const char *path;          /* the name given to gguf_open / gguf_parse */
    const uint8_t *base; size_t size; int mapped; uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv; gguf_tensor *tensors;
    uint32_t alignment;        /* general.alignment, default 32 */
    uint64_t data_offset;      /* file offset of the data section */
    /* private: open-addressing hash tables of index+1 (0 = empty) */
    uint32_t *kv_map_, *tensor_map_;
    uint64_t kv_mask_, tensor_mask_, seed_;
} gguf_file;

/* Parse a GGUF image held in memory (not copied: strings and tensor data point
 * into it, so it must outlive f). name is used in error messages. 0 ok, -1 error
 * (err filled; f is left zeroed and needs no gguf_close, though one is harmless). */
int gguf_parse(gguf_file *f, const uint8_t *data, size_t size, const char *name, char *err, size_t errlen);
/* open + mmap (read-only) + gguf_parse. 0 ok, -1 error. */
int gguf_open(gguf_file *f, const char *path, char *err, size_t errlen);
/* Frees everything and unmaps; safe on a zeroed or failed struct, and twice. */
void gguf_close(gguf_file *f);

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);          /* NULL if absent */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* NULL if absent */

/* Typed getters: 1 found (out written), 0 missing, -1 present but the wrong type
 * (or, for gguf_get_int, a UINT64 above INT64_MAX).
 *   gguf_get_int:   any integer type (UINT8..INT64) or BOOL
 *   gguf_get_float: FLOAT32 / FLOAT64, and any integer type (converted)
 *   gguf_get_str:   STRING (not NUL-terminated: use the n)
 *   gguf_get_arr:   ARRAY (any element type if elem_type < 0, else exactly that) */
int gguf_get_int(const gguf_file *f, const char *key, int64_t *out);
int gguf_get_float(const gguf_file *f, const char *key, double *out);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
int gguf_get_arr(const gguf_file *f, const char *key, int elem_type, const gguf_kv **out);
/* Element i of an array KV of integer (or BOOL) / number elements:
 * 1 ok, -1 wrong element type or i out of range. */
int gguf_arr_get_int(const gguf_kv *kv, uint64_t i, int64_t *out);
int gguf_arr_get_float(const gguf_kv *kv, uint64_t i, double *out);
/* 1 if the string equals the NUL-terminated s */
int gguf_str_eq(gguf_str a, const char *s);

#ifdef __cplusplus
}
#endif
#endif /* GGUF_H */

/* ======================================================================== */
#ifdef GGUF_IMPLEMENTATION
#ifndef GGUF_IMPLEMENTATION_DONE
#define GGUF_IMPLEMENTATION_DONE

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- type table */
static const gguf_type_traits gguf__types[GGML_TYPE_COUNT] = {
    /* 0  */ {"f32", 1, 4, 1},       {"f16", 1, 2, 1},
    /* 2  */ {"q4_0", 32, 18, 1},    {"q4_1", 32, 20, 1},
    /* 4  */ {NULL, 0, 0, 0},        {NULL, 0, 0, 0},
    /* 6  */ {"q5_0", 32, 22, 1},    {"q5_1", 32, 24, 1},
    /* 8  */ {"q8_0", 32, 34, 1},    {"q8_1", 32, 36, 0},
    /* 10 */ {"q2_K", 256, 84, 1},   {"q3_K", 256, 110, 1},
    /* 12 */ {"q4_K", 256, 144, 1},  {"q5_K", 256, 176, 1},
    /* 14 */ {"q6_K", 256, 210, 1},  {"q8_K", 256, 292, 0},
    /* 16 */ {"iq2_xxs", 256, 66, 0},{"iq2_xs", 256, 74, 0},
    /* 18 */ {"iq3_xxs", 256, 98, 0},{"iq1_s", 256, 50, 0},
    /* 20 */ {"iq4_nl", 32, 18, 1},  {"iq3_s", 256, 110, 0},
    /* 22 */ {"iq2_s", 256, 82, 0},  {"iq4_xs", 256, 136, 1},
    /* 24 */ {"i8", 1, 1, 0},        {"i16", 1, 2, 0},
    /* 26 */ {"i32", 1, 4, 0},       {"i64", 1, 8, 0},
    /* 28 */ {"f64", 1, 8, 0},       {"iq1_m", 256, 56, 0},
    /* 30 */ {"bf16", 1, 2, 1},      {NULL, 0, 0, 0},
    /* 32 */ {NULL, 0, 0, 0},        {NULL, 0, 0, 0},
    /* 34 */ {"tq1_0", 256, 54, 0},  {"tq2_0", 256, 66, 0},
    /* 36 */ {NULL, 0, 0, 0},        {NULL, 0, 0, 0},
    /* 38 */ {NULL, 0, 0, 0},        {"mxfp4", 32, 17, 0},
    /* 40 */ {"nvfp4", 64, 36, 0},   {"q1_0", 128, 18, 0},
    /* 42 */ {"q2_0", 64, 18, 0},
};

const gguf_type_traits *gguf_type_get(uint32_t type) {
    if (type >= GGML_TYPE_COUNT || !gguf__types[type].name) return NULL;
    return &gguf__types[type];
}

size_t gguf_row_bytes(uint32_t type, int64_t n) {
    const gguf_type_traits *t = gguf_type_get(type);
    if (!t || n < 0) return 0;
    return (size_t)(n / t->blck_size) * (size_t)t->type_size;
}

/* ---------------------------------------------------------- dequantization */
/* Exactness: every product here of an f16 scale (11 significant bits), a 6-bit
 * sub-scale and a quant of at most 6 bits fits in float's 24-bit significand, so
 * d*sc*q is exact and a compiler's fused multiply-add (GCC contracts by default in
 * gnu modes) rounds a*b+c exactly like the separate multiply and add of ggml's
 * reference and NumPy. The order of operations is kept as in ggml: (d*sc)*q - (dmin*m).
 * restrict: the output (float) and input (bytes) never overlap; without it the
 * compiler must assume uint8_t aliases everything and gives up vectorizing. */
#if defined(__GNUC__) || defined(__clang__)
#define GGUF_RESTRICT __restrict
#else
#define GGUF_RESTRICT
#endif

static inline uint16_t gguf__rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t gguf__rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline float gguf__h(const uint8_t *p) { return gguf_f16_to_f32(gguf__rd16(p)); }

static const int8_t gguf__kvalues_iq4nl[16] = {
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113
};

/* Q4_0: f16 d; 16 bytes: low nibbles are elements 0..15, high nibbles 16..31; (q-8)*d */
static void gguf__dq_q4_0(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        const float d = gguf__h(b);
        const uint8_t *qs = b + 2;
        for (int j = 0; j < 16; j++) {
            y[j]      = (float)((int)(qs[j] & 15) - 8) * d;
            y[j + 16] = (float)((int)(qs[j] >> 4) - 8) * d;
        }
    }
}

/* Q4_1: f16 d, f16 m; q*d + m */
static void gguf__dq_q4_1(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 20, y += 32) {
        const float d = gguf__h(b), m = gguf__h(b + 2);
        const uint8_t *qs = b + 4;
        for (int j = 0; j < 16; j++) {
            y[j]      = (float)(qs[j] & 15) * d + m;
            y[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* Q5_0: f16 d, u32 qh (bit j = 5th bit of element j), nibbles as Q4_0; (q-16)*d */
static void gguf__dq_q5_0(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 22, y += 32) {
        const float d = gguf__h(b);
        const uint32_t qh = gguf__rd32(b + 2);
        const uint8_t *qs = b + 6;
        for (int j = 0; j < 16; j++) {
            const int lo = (int)((qs[j] & 15) | (((qh >> j) & 1u) << 4));
            const int hi = (int)((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
            y[j]      = (float)(lo - 16) * d;
            y[j + 16] = (float)(hi - 16) * d;
        }
    }
}

/* Q5_1: f16 d, f16 m, u32 qh, nibbles; q*d + m */
static void gguf__dq_q5_1(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 24, y += 32) {
        const float d = gguf__h(b), m = gguf__h(b + 2);
        const uint32_t qh = gguf__rd32(b + 4);
        const uint8_t *qs = b + 8;
        for (int j = 0; j < 16; j++) {
            const uint32_t lo = (qs[j] & 15u) | (((qh >> j) & 1u) << 4);
            const uint32_t hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4);
            y[j]      = (float)lo * d + m;
            y[j + 16] = (float)hi * d + m;
        }
    }
}

/* Q8_0: f16 d, 32 int8 */
static void gguf__dq_q8_0(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        const float d = gguf__h(b);
        const int8_t *qs = (const int8_t *)(b + 2);
        for (int j = 0; j < 32; j++) y[j] = (float)qs[j] * d;
    }
}

/* Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2 bits, 4 planes
 * per 32 bytes), f16 d, f16 dmin. 16 groups of 16: (d*sc)*q - (dmin*m). */
static void gguf__dq_q2_K(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 84) {
        const uint8_t *sc = b, *qs = b + 16;
        const float d = gguf__h(b + 80), dmin = gguf__h(b + 82);
        for (int h = 0; h < 2; h++, qs += 32) {
            for (int s = 0; s < 4; s++) {           /* bit plane: shift 2s */
                for (int k = 0; k < 2; k++, sc++, y += 16) {
                    const float dl = d * (float)(*sc & 15), ml = dmin * (float)(*sc >> 4);
                    const uint8_t *q = qs + 16 * k;
                    for (int l = 0; l < 16; l++) y[l] = dl * (float)((q[l] >> (2 * s)) & 3) - ml;
                }
            }
        }
    }
}

/* Q3_K: hmask[32], qs[64], scales[12] (16 6-bit scales, -32), f16 d.
 * q = low 2 bits - (hmask bit set ? 0 : 4). */
static void gguf__dq_q3_K(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 110) {
        const uint8_t *hm = b, *qs = b + 32, *s = b + 96;
        const float d = gguf__h(b + 108);
        float dl[16];
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? (s[j] & 15) : (s[j - 8] >> 4);
            const int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            dl[j] = d * (float)((lo | (hi << 4)) - 32);
        }
        /* half h (128 elements) uses qs[32h..] bit planes 0..3 and hmask bits 4h..4h+3;
         * element 32t+l of the half: plane t of qs[l], hmask bit 4h+t of hm[l],
         * scale index 8h + 2t + l/16 */
        for (int h = 0; h < 2; h++, qs += 32, y += 128) {
            for (int l0 = 0; l0 < 32; l0 += 16) {
                const float *g = dl + 8 * h + l0 / 16;
                const float g0 = g[0], g1 = g[2], g2 = g[4], g3 = g[6];
                for (int l = l0; l < l0 + 16; l++) {
                    const int q = qs[l], m = hm[l] >> (4 * h);
                    y[l]      = g0 * (float)((q & 3) - (((m & 1) ^ 1) << 2));
                    y[l + 32] = g1 * (float)(((q >> 2) & 3) - ((((m >> 1) & 1) ^ 1) << 2));
                    y[l + 64] = g2 * (float)(((q >> 4) & 3) - ((((m >> 2) & 1) ^ 1) << 2));
                    y[l + 96] = g3 * (float)(((q >> 6) & 3) - ((((m >> 3) & 1) ^ 1) << 2));
                }
            }
        }
    }
}

/* The K-quant 6-bit scale/min pairs of Q4_K and Q5_K, 8 of each packed in 12 bytes:
 * j<4: sc = s[j]&63, m = s[j+4]&63; j>=4: low 4 bits in s[j+4], top 2 bits in the
 * top bits of s[j-4] (scale) / s[j] (min). */
static inline void gguf__scale_min_k4(const uint8_t *s, float d, float dmin, float *dl, float *ml) {
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) { sc = s[j] & 63; m = s[j + 4] & 63; }
        else { sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4); m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
        dl[j] = d * (float)sc;
        ml[j] = dmin * (float)m;
    }
}

/* Q4_K: f16 d, f16 dmin, scales[12], qs[128]; 4 chunks of 64: low nibbles with
 * scale 2c, high nibbles with scale 2c+1. (d*sc)*q - (dmin*m) */
static void gguf__dq_q4_K(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 144) {
        float dl[8], ml[8];
        gguf__scale_min_k4(b + 4, gguf__h(b), gguf__h(b + 2), dl, ml);
        const uint8_t *qs = b + 16;
        for (int c = 0; c < 4; c++, qs += 32, y += 64) {
            const float d1 = dl[2 * c], m1 = ml[2 * c], d2 = dl[2 * c + 1], m2 = ml[2 * c + 1];
            for (int l = 0; l < 32; l++) y[l]      = d1 * (float)(qs[l] & 15) - m1;
            for (int l = 0; l < 32; l++) y[l + 32] = d2 * (float)(qs[l] >> 4) - m2;
        }
    }
}

/* Q5_K: as Q4_K plus qh[32]: bit g of qh[l] is the 5th bit of element l of group g */
static void gguf__dq_q5_K(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 176) {
        float dl[8], ml[8];
        gguf__scale_min_k4(b + 4, gguf__h(b), gguf__h(b + 2), dl, ml);
        const uint8_t *qh = b + 16, *qs = b + 48;
        for (int c = 0; c < 4; c++, qs += 32, y += 64) {
            const int g1 = 2 * c, g2 = 2 * c + 1;
            const float d1 = dl[g1], m1 = ml[g1], d2 = dl[g2], m2 = ml[g2];
            for (int l = 0; l < 32; l++)
                y[l] = d1 * (float)((qs[l] & 15) | (((qh[l] >> g1) & 1) << 4)) - m1;
            for (int l = 0; l < 32; l++)
                y[l + 32] = d2 * (float)((qs[l] >> 4) | (((qh[l] >> g2) & 1) << 4)) - m2;
        }
    }
}

/* Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d.
 * Per 128-element half: element 32t+l takes the low (t<2) or high (t>=2) nibble of
 * ql[l + 32(t&1)] and bits 2t..2t+1 of qh[l]; value q-32; scale index (32t+l)/16
 * of the half. (d*sc)*(q-32) */
static void gguf__dq_q6_K(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = gguf__h(b + 208);
        float ds[16];
        for (int k = 0; k < 16; k++) ds[k] = d * (float)sc[k];
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, y += 128) {
            for (int l0 = 0; l0 < 32; l0 += 16) {
                const float *s = ds + 8 * h + l0 / 16;
                const float s0 = s[0], s1 = s[2], s2 = s[4], s3 = s[6];
                for (int l = l0; l < l0 + 16; l++) {
                    const int a = ql[l], c = ql[l + 32], hh = qh[l];
                    y[l]      = s0 * (float)((int)((a & 15) | ((hh & 3) << 4)) - 32);
                    y[l + 32] = s1 * (float)((int)((c & 15) | (((hh >> 2) & 3) << 4)) - 32);
                    y[l + 64] = s2 * (float)((int)((a >> 4) | (((hh >> 4) & 3) << 4)) - 32);
                    y[l + 96] = s3 * (float)((int)((c >> 4) | (((hh >> 6) & 3) << 4)) - 32);
                }
            }
        }
    }
}

/* IQ4_NL: f16 d, nibbles (low = 0..15, high = 16..31) index the non-linear table */
static void gguf__dq_iq4_nl(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        const float d = gguf__h(b);
        float t[16];
        for (int k = 0; k < 16; k++) t[k] = d * (float)gguf__kvalues_iq4nl[k];
        const uint8_t *qs = b + 2;
        for (int j = 0; j < 16; j++) { y[j] = t[qs[j] & 15]; y[j + 16] = t[qs[j] >> 4]; }
    }
}

/* IQ4_XS: f16 d, u16 scales_h, scales_l[4], qs[128]; 8 sub-blocks of 32 with 6-bit
 * scale ls (low 4 bits from scales_l nibble, high 2 from scales_h), (d*(ls-32))*kv */
static void gguf__dq_iq4_xs(const uint8_t *GGUF_RESTRICT b, float *GGUF_RESTRICT y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 136) {
        const float d = gguf__h(b);
        const uint16_t sh = gguf__rd16(b + 2);
        const uint8_t *sl = b + 4, *qs = b + 8;
        for (int ib = 0; ib < 8; ib++, qs += 16, y += 32) {
            const int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            float t[16];
            for (int k = 0; k < 16; k++) t[k] = dl * (float)gguf__kvalues_iq4nl[k];
            for (int j = 0; j < 16; j++) { y[j] = t[qs[j] & 15]; y[j + 16] = t[qs[j] >> 4]; }
        }
    }
}

void gguf_dequant_row(uint32_t type, const void *src, float *dst, int64_t n) {
    const uint8_t *b = (const uint8_t *)src;
    const gguf_type_traits *t = gguf_type_get(type);
    if (!t || n <= 0) return;
    const int64_t nb = n / t->blck_size;
    switch (type) {
    case GGML_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case GGML_TYPE_F16: for (int64_t i = 0; i < n; i++) dst[i] = gguf_f16_to_f32(gguf__rd16(b + 2 * i)); break;
    case GGML_TYPE_BF16: for (int64_t i = 0; i < n; i++) dst[i] = gguf_bf16_to_f32(gguf__rd16(b + 2 * i)); break;
    case GGML_TYPE_Q4_0: gguf__dq_q4_0(b, dst, nb); break;
    case GGML_TYPE_Q4_1: gguf__dq_q4_1(b, dst, nb); break;
    case GGML_TYPE_Q5_0: gguf__dq_q5_0(b, dst, nb); break;
    case GGML_TYPE_Q5_1: gguf__dq_q5_1(b, dst, nb); break;
    case GGML_TYPE_Q8_0: gguf__dq_q8_0(b, dst, nb); break;
    case GGML_TYPE_Q2_K: gguf__dq_q2_K(b, dst, nb); break;
    case GGML_TYPE_Q3_K: gguf__dq_q3_K(b, dst, nb); break;
    case GGML_TYPE_Q4_K: gguf__dq_q4_K(b, dst, nb); break;
    case GGML_TYPE_Q5_K: gguf__dq_q5_K(b, dst, nb); break;
    case GGML_TYPE_Q6_K: gguf__dq_q6_K(b, dst, nb); break;
    case GGML_TYPE_IQ4_NL: gguf__dq_iq4_nl(b, dst, nb); break;
    case GGML_TYPE_IQ4_XS: gguf__dq_iq4_xs(b, dst, nb); break;
    default: memset(dst, 0, (size_t)n * sizeof(float)); break;
    }
}

/* ------------------------------------------------------------------ parser */
static const char *const gguf__kv_names[GGUF_KV_COUNT] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL",
    "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"
};
static const uint8_t gguf__kv_sizes[GGUF_KV_COUNT] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

const char *gguf_kv_type_name(uint32_t type) { return type < GGUF_KV_COUNT ? gguf__kv_names[type] : "?"; }
size_t gguf_kv_type_size(uint32_t type) { return type < GGUF_KV_COUNT ? gguf__kv_sizes[type] : 0; }

#define GGUF_MAX_NAME 256        /* tensor name length limit */
#define GGUF_MAX_DEPTH 8         /* nesting limit for arrays of arrays */
#define GGUF_MIN_KV_BYTES 13     /* 8 key length + 4 type + 1-byte value */
#define GGUF_MIN_TENSOR_BYTES 32 /* 8 name length + 4 n_dims + 8 ne[0] + 4 type + 8 offset */
#define GGUF_MAX_COUNT 0x7fffffffu

typedef struct {
    const uint8_t *p; size_t size; size_t pos;
    const char *name; char *err; size_t errlen;
} gguf__rd;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int gguf__fail(gguf__rd *r, const char *fmt, ...) {
    if (r->err && r->errlen) {
        int k = snprintf(r->err, r->errlen, "%s: ", r->name ? r->name : "(gguf)");
        if (k < 0) k = 0;
        if ((size_t)k < r->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(r->err + k, r->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

static size_t gguf__left(const gguf__rd *r) { return r->size - r->pos; }

/* Make sure n more bytes exist; what describes them for the message. */
static int gguf__need(gguf__rd *r, size_t n, const char *what) {
    if (gguf__left(r) < n)
        return gguf__fail(r, "expected %s at offset %llu, but the file ends at %llu",
                          what, (unsigned long long)r->pos, (unsigned long long)r->size);
    return 0;
}

static int gguf__u32(gguf__rd *r, uint32_t *v, const char *what) {
    if (gguf__need(r, 4, what)) return -1;
    memcpy(v, r->p + r->pos, 4); r->pos += 4; return 0;
}
static int gguf__u64(gguf__rd *r, uint64_t *v, const char *what) {
    if (gguf__need(r, 8, what)) return -1;
    memcpy(v, r->p + r->pos, 8); r->pos += 8; return 0;
}

/* A string: u64 length + bytes. what names it ("key of KV 3", ...). */
static int gguf__str(gguf__rd *r, gguf_str *s, const char *what) {
    const size_t at = r->pos;
    uint64_t n;
    if (gguf__left(r) < 8) {   /* the message is only formatted on failure */
        char buf[400];
        snprintf(buf, sizeof buf, "8-byte string length (%s)", what);
        return gguf__need(r, 8, buf);
    }
    memcpy(&n, r->p + r->pos, 8); r->pos += 8;
    if (n > gguf__left(r))
        return gguf__fail(r, "string length %llu (%s) at offset %llu runs past the end of the file: "
                          "only %llu bytes follow", (unsigned long long)n, what,
                          (unsigned long long)at, (unsigned long long)gguf__left(r));
    s->n = n; s->s = (const char *)(r->p + r->pos); r->pos += (size_t)n;
    return 0;
}

static int gguf__mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a && b > UINT64_MAX / a) return 0;
    *out = a * b; return 1;
}

/* Validate (and skip) one array body: elem type, count, elements. At depth 0 the
 * caller's kv receives the description. */
static int gguf__array(gguf__rd *r, gguf_kv *kv, int depth, const char *key) {
    const size_t at = r->pos;
    uint32_t et; uint64_t n;
    if (gguf__u32(r, &et, "4-byte array element type")) return -1;
    if (et >= GGUF_KV_COUNT)
        return gguf__fail(r, "KV '%s': unknown array element type id %u at offset %llu",
                          key, et, (unsigned long long)at);
    if (gguf__u64(r, &n, "8-byte array element count")) return -1;
    const uint8_t *data = r->p + r->pos;
    if (kv) { kv->arr_type = et; kv->arr_n = n; kv->arr_data = data; }
    const size_t esz = gguf__kv_sizes[et];
    if (esz) {
        uint64_t bytes;
        if (!gguf__mul_ok(n, esz, &bytes) || bytes > gguf__left(r))
            return gguf__fail(r, "KV '%s': array of %llu %s at offset %llu needs %llu x %u bytes, "
                              "but only %llu bytes follow", key, (unsigned long long)n,
                              gguf__kv_names[et], (unsigned long long)at, (unsigned long long)n,
                              (unsigned)esz, (unsigned long long)gguf__left(r));
        r->pos += (size_t)bytes;
        return 0;
    }
    if (et == GGUF_KV_STRING) {
        if (n > gguf__left(r) / 8)   /* every string takes at least its 8-byte length */
            return gguf__fail(r, "KV '%s': array of %llu strings at offset %llu cannot fit in the "
                              "%llu bytes that follow", key, (unsigned long long)n,
                              (unsigned long long)at, (unsigned long long)gguf__left(r));
        gguf_str *ss = NULL;
        if (kv && n) {
            ss = (gguf_str *)malloc((size_t)n * sizeof(gguf_str));
            if (!ss) return gguf__fail(r, "out of memory for %llu strings of KV '%s'", (unsigned long long)n, key);
            kv->arr_str = ss;
        }
        for (uint64_t i = 0; i < n; i++) {
            gguf_str s;
            uint64_t len;
            /* fast path for vocabularies of 150k strings: no message formatting */
            if (gguf__left(r) >= 8 && (memcpy(&len, r->p + r->pos, 8), len <= gguf__left(r) - 8)) {
                s.n = len; s.s = (const char *)(r->p + r->pos + 8); r->pos += 8 + (size_t)len;
            } else {
                char what[96];
                snprintf(what, sizeof what, "element %llu of array '%.40s'", (unsigned long long)i, key);
                if (gguf__str(r, &s, what)) return -1;
            }
            if (ss) ss[i] = s;
        }
        return 0;
    }
    /* array of arrays: each element is at least 4 (type) + 8 (count) bytes */
    if (depth + 1 >= GGUF_MAX_DEPTH)
        return gguf__fail(r, "KV '%s': arrays nested deeper than %d levels at offset %llu",
                          key, GGUF_MAX_DEPTH, (unsigned long long)at);
    if (n > gguf__left(r) / 12)
        return gguf__fail(r, "KV '%s': array of %llu arrays at offset %llu cannot fit in the "
                          "%llu bytes that follow", key, (unsigned long long)n,
                          (unsigned long long)at, (unsigned long long)gguf__left(r));
    for (uint64_t i = 0; i < n; i++)
        if (gguf__array(r, NULL, depth + 1, key)) return -1;
    return 0;
}

/* Hashing: seeded FNV-1a with a final mix. The seed varies per file (address of
 * the allocation) so a crafted file cannot precompute collisions. */
static uint64_t gguf__hash(const char *s, uint64_t seed) {
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (; *s; s++) { h ^= (uint8_t)*s; h *= 0x100000001b3ull; }
    h ^= h >> 31; h *= 0xbf58476d1ce4e5b9ull; h ^= h >> 29;
    return h;
}

static uint32_t *gguf__map_new(uint64_t n, uint64_t *mask) {
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    *mask = cap - 1;
    return (uint32_t *)calloc((size_t)cap, sizeof(uint32_t));
}

/* Find the slot for name in a map over an array of names (names[i] at stride).
 * Returns the slot index; *found is the 1-based entry index or 0. */
static uint64_t gguf__map_slot(const uint32_t *map, uint64_t mask, uint64_t seed, const char *name,
                               const char *const *names0, size_t stride, uint32_t *found) {
    uint64_t h = gguf__hash(name, seed) & mask;
    for (;;) {
        uint32_t e = map[h];
        if (!e) { *found = 0; return h; }
        const char *nm = *(const char *const *)((const char *)names0 + (size_t)(e - 1) * stride);
        if (strcmp(nm, name) == 0) { *found = e; return h; }
        h = (h + 1) & mask;
    }
}

/* Grow an entry array (elsz bytes each, NUL-terminated name pointer at name_off)
 * from *cap to min(2*cap, n) entries, zeroing the new ones, and rebuild its map
 * from the *cap entries parsed so far. */
static int gguf__grow(gguf__rd *r, void **arr, uint64_t *cap, uint64_t n, size_t elsz,
                      uint32_t **map, uint64_t *mask, uint64_t seed, size_t name_off) {
    uint64_t nc = *cap ? 2 * *cap : 64;
    if (nc > n) nc = n;
    void *na = realloc(*arr, (size_t)nc * elsz);
    uint64_t nmask;
    uint32_t *nm = gguf__map_new(nc, &nmask);
    if (!na || !nm) {
        free(nm);
        if (na) *arr = na;
        return gguf__fail(r, "out of memory for %llu entries", (unsigned long long)nc);
    }
    memset((char *)na + (size_t)*cap * elsz, 0, (size_t)(nc - *cap) * elsz);
    const char *const *names0 = (const char *const *)((const char *)na + name_off);
    for (uint64_t i = 0; i < *cap; i++) {
        uint32_t found;
        const char *nm_i = *(const char *const *)((const char *)names0 + (size_t)i * elsz);
        uint64_t slot = gguf__map_slot(nm, nmask, seed, nm_i, names0, elsz, &found);
        nm[slot] = (uint32_t)(i + 1);
    }
    free(*map);
    *arr = na; *map = nm; *mask = nmask; *cap = nc;
    return 0;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->kv) {
        for (uint64_t i = 0; i < f->n_kv; i++) { free(f->kv[i].key); free(f->kv[i].arr_str); }
        free(f->kv);
    }
    if (f->tensors) {
        for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
        free(f->tensors);
    }
    free(f->kv_map_); free(f->tensor_map_);
    if (f->mapped && f->base) munmap((void *)f->base, f->size);
    memset(f, 0, sizeof *f);
}

static char *gguf__strdup(gguf_str s) {
    char *c = (char *)malloc((size_t)s.n + 1);
    if (!c) return NULL;
    memcpy(c, s.s, (size_t)s.n); c[s.n] = 0;
    return c;
}

int gguf_parse(gguf_file *f, const uint8_t *data, size_t size, const char *name, char *err, size_t errlen) {
    gguf__rd rd; gguf__rd *r = &rd;
    uint64_t kv_cap = 0, t_cap = 0, kv_done = 0, t_done = 0;
    memset(f, 0, sizeof *f);
    rd.p = data; rd.size = data ? size : 0; rd.pos = 0; rd.name = name; rd.err = err; rd.errlen = errlen;
    if (err && errlen) err[0] = 0;
    f->path = name; f->base = data; f->size = size; f->alignment = 32;

    /* header */
    if (gguf__need(r, 4, "4-byte magic 'GGUF'")) goto fail;
    if (memcmp(data, "GGUF", 4) != 0) {
        gguf__fail(r, "not a GGUF file: expected magic 'GGUF' at offset 0, found bytes %02x %02x %02x %02x",
                   data[0], data[1], data[2], data[3]);
        goto fail;
    }
    r->pos = 4;
    if (gguf__u32(r, &f->version, "4-byte version")) goto fail;
    if (f->version != 2 && f->version != 3) {
        uint32_t v = f->version;
        uint32_t sw = (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
        gguf__fail(r, "unsupported GGUF version %u at offset 4 (expected 2 or 3%s)", v,
                   v == 1 ? "; version 1 used 32-bit counts and is obsolete"
                   : (sw == 2 || sw == 3) ? "; this looks like a big-endian GGUF" : "");
        goto fail;
    }
    if (gguf__u64(r, &f->n_tensors, "8-byte tensor count")) goto fail;
    if (gguf__u64(r, &f->n_kv, "8-byte KV count")) goto fail;
    {
        /* bound the counts by what the rest of the file could hold before allocating */
        const uint64_t left = gguf__left(r);
        if (f->n_kv > left / GGUF_MIN_KV_BYTES || f->n_kv > GGUF_MAX_COUNT) {
            gguf__fail(r, "KV count %llu at offset 16 is impossible: the %llu bytes that follow hold at most %llu key-value pairs",
                       (unsigned long long)f->n_kv, (unsigned long long)left, (unsigned long long)(left / GGUF_MIN_KV_BYTES));
            f->n_kv = 0; goto fail;
        }
        const uint64_t left2 = left - f->n_kv * GGUF_MIN_KV_BYTES;
        if (f->n_tensors > left2 / GGUF_MIN_TENSOR_BYTES || f->n_tensors > GGUF_MAX_COUNT) {
            gguf__fail(r, "tensor count %llu at offset 8 is impossible: the %llu bytes that follow hold at most %llu tensor infos",
                       (unsigned long long)f->n_tensors, (unsigned long long)left, (unsigned long long)(left2 / GGUF_MIN_TENSOR_BYTES));
            f->n_kv = 0; f->n_tensors = 0; goto fail;
        }
    }
    /* Entry arrays grow as entries are actually parsed (each one consumed at least
     * 13 / 32 bytes of the file), so a hostile count in a short file allocates
     * nothing big; the lookup maps grow with them. */
    f->seed_ = ((uint64_t)(uintptr_t)f ^ ((uint64_t)(uintptr_t)data << 17)) * 0x9e3779b97f4a7c15ull ^ (uint64_t)size;

    /* key-value pairs */
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if (i == kv_cap && gguf__grow(r, (void **)&f->kv, &kv_cap, f->n_kv, sizeof(gguf_kv),
                                      &f->kv_map_, &f->kv_mask_, f->seed_, offsetof(gguf_kv, key)))
            goto fail;
        kv_done = i + 1;   /* zeroed entry: owned by the cleanup from now on */
        gguf_kv *kv = &f->kv[i];
        char what[128];
        gguf_str key = {0, NULL};
        kv->offset = r->pos;
        snprintf(what, sizeof what, "key of KV %llu", (unsigned long long)i);
        if (gguf__str(r, &key, what)) goto fail;
        if (memchr(key.s, 0, (size_t)key.n)) {
            gguf__fail(r, "key of KV %llu at offset %llu contains a NUL byte", (unsigned long long)i, (unsigned long long)kv->offset);
            goto fail;
        }
        if (!(kv->key = gguf__strdup(key))) { gguf__fail(r, "out of memory"); goto fail; }
        const size_t type_at = r->pos;
        uint32_t type;
        snprintf(what, sizeof what, "4-byte value type of KV '%.40s'", kv->key);
        if (gguf__u32(r, &type, what)) goto fail;
        if (type >= GGUF_KV_COUNT) {
            gguf__fail(r, "KV '%s' has unknown value type id %u at offset %llu", kv->key, type, (unsigned long long)type_at);
            goto fail;
        }
        kv->type = type;
        const size_t val_at = r->pos;
        if (type == GGUF_KV_STRING) {
            snprintf(what, sizeof what, "value of KV '%.40s'", kv->key);
            if (gguf__str(r, &kv->v.str, what)) goto fail;
        } else if (type == GGUF_KV_ARRAY) {
            if (gguf__array(r, kv, 0, kv->key)) goto fail;
        } else {
            const size_t sz = gguf__kv_sizes[type];
            snprintf(what, sizeof what, "%u-byte %s value of KV '%.40s'", (unsigned)sz, gguf__kv_names[type], kv->key);
            if (gguf__need(r, sz, what)) goto fail;
            const uint8_t *p = r->p + r->pos;
            switch (type) {
            case GGUF_KV_UINT8: case GGUF_KV_BOOL: kv->v.u = p[0]; break;
            case GGUF_KV_INT8: kv->v.i = (int8_t)p[0]; break;
            case GGUF_KV_UINT16: { uint16_t x; memcpy(&x, p, 2); kv->v.u = x; break; }
            case GGUF_KV_INT16: { int16_t x; memcpy(&x, p, 2); kv->v.i = x; break; }
            case GGUF_KV_UINT32: { uint32_t x; memcpy(&x, p, 4); kv->v.u = x; break; }
            case GGUF_KV_INT32: { int32_t x; memcpy(&x, p, 4); kv->v.i = x; break; }
            case GGUF_KV_FLOAT32: { float x; memcpy(&x, p, 4); kv->v.f = x; break; }
            case GGUF_KV_UINT64: { uint64_t x; memcpy(&x, p, 8); kv->v.u = x; break; }
            case GGUF_KV_INT64: { int64_t x; memcpy(&x, p, 8); kv->v.i = x; break; }
            case GGUF_KV_FLOAT64: { double x; memcpy(&x, p, 8); kv->v.f = x; break; }
            }
            r->pos += sz;
        }
        uint32_t found;
        uint64_t slot = gguf__map_slot(f->kv_map_, f->kv_mask_, f->seed_, kv->key,
                                       (const char *const *)&f->kv[0].key, sizeof(gguf_kv), &found);
        if (found) {
            gguf__fail(r, "duplicate key '%s' at offset %llu (first defined at offset %llu)", kv->key,
                       (unsigned long long)kv->offset, (unsigned long long)f->kv[found - 1].offset);
            goto fail;
        }
        f->kv_map_[slot] = (uint32_t)(i + 1);

        if (strcmp(kv->key, "general.alignment") == 0) {
            if (type != GGUF_KV_UINT32) {
                gguf__fail(r, "general.alignment at offset %llu must be UINT32, found %s",
                           (unsigned long long)kv->offset, gguf__kv_names[type]);
                goto fail;
            }
            if (kv->v.u == 0 || (kv->v.u & (kv->v.u - 1))) {
                gguf__fail(r, "general.alignment at offset %llu is %llu, expected a non-zero power of two",
                           (unsigned long long)val_at, (unsigned long long)kv->v.u);
                goto fail;
            }
            f->alignment = (uint32_t)kv->v.u;
        }
    }

    /* tensor infos */
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        if (i == t_cap && gguf__grow(r, (void **)&f->tensors, &t_cap, f->n_tensors, sizeof(gguf_tensor),
                                     &f->tensor_map_, &f->tensor_mask_, f->seed_, offsetof(gguf_tensor, name)))
            goto fail;
        t_done = i + 1;
        gguf_tensor *t = &f->tensors[i];
        char what[320];
        gguf_str nm = {0, NULL};
        t->info_offset = r->pos;
        snprintf(what, sizeof what, "name of tensor %llu", (unsigned long long)i);
        if (gguf__str(r, &nm, what)) goto fail;
        if (nm.n > GGUF_MAX_NAME) {
            gguf__fail(r, "tensor %llu at offset %llu has a name of %llu bytes, expected at most %d",
                       (unsigned long long)i, (unsigned long long)t->info_offset, (unsigned long long)nm.n, GGUF_MAX_NAME);
            goto fail;
        }
        if (memchr(nm.s, 0, (size_t)nm.n)) {
            gguf__fail(r, "name of tensor %llu at offset %llu contains a NUL byte", (unsigned long long)i, (unsigned long long)t->info_offset);
            goto fail;
        }
        if (!(t->name = gguf__strdup(nm))) { gguf__fail(r, "out of memory"); goto fail; }
        size_t at = r->pos;
        snprintf(what, sizeof what, "4-byte n_dims of tensor '%s'", t->name);
        if (gguf__u32(r, &t->n_dims, what)) goto fail;
        if (t->n_dims < 1 || t->n_dims > 4) {
            gguf__fail(r, "tensor '%s' has n_dims %u at offset %llu, expected 1 to 4", t->name, t->n_dims, (unsigned long long)at);
            goto fail;
        }
        int64_t nel = 1;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t v;
            at = r->pos;
            snprintf(what, sizeof what, "8-byte ne[%u] of tensor '%s'", d, t->name);
            if (gguf__u64(r, &v, what)) goto fail;
            if (v < 1 || v > (uint64_t)INT64_MAX) {
                gguf__fail(r, "tensor '%s' has ne[%u] = %lld at offset %llu, expected >= 1", t->name, d,
                           (long long)v, (unsigned long long)at);
                goto fail;
            }
            if ((int64_t)v > INT64_MAX / nel) {
                gguf__fail(r, "tensor '%s' dimensions overflow a 64-bit element count at ne[%u] = %llu (offset %llu)",
                           t->name, d, (unsigned long long)v, (unsigned long long)at);
                goto fail;
            }
            t->ne[d] = (int64_t)v; nel *= (int64_t)v;
        }
        at = r->pos;
        snprintf(what, sizeof what, "4-byte type of tensor '%s'", t->name);
        if (gguf__u32(r, &t->type, what)) goto fail;
        const gguf_type_traits *tt = gguf_type_get(t->type);
        if (!tt) {
            gguf__fail(r, "tensor '%s' has unknown type id %u at offset %llu", t->name, t->type, (unsigned long long)at);
            goto fail;
        }
        if (t->ne[0] % tt->blck_size) {
            gguf__fail(r, "tensor '%s' (%s) has ne[0] = %lld at offset %llu, not a multiple of the block size %d",
                       t->name, tt->name, (long long)t->ne[0], (unsigned long long)(t->info_offset + 8 + nm.n + 4), tt->blck_size);
            goto fail;
        }
        at = r->pos;
        snprintf(what, sizeof what, "8-byte data offset of tensor '%s'", t->name);
        if (gguf__u64(r, &t->offset, what)) goto fail;
        if (t->offset % f->alignment) {
            gguf__fail(r, "tensor '%s' has data offset %llu at offset %llu, not a multiple of the alignment %u",
                       t->name, (unsigned long long)t->offset, (unsigned long long)at, f->alignment);
            goto fail;
        }
        uint64_t rowb, nb;
        if (!gguf__mul_ok((uint64_t)(t->ne[0] / tt->blck_size), (uint64_t)tt->type_size, &rowb) ||
            !gguf__mul_ok(rowb, (uint64_t)(nel / t->ne[0]), &nb)) {
            gguf__fail(r, "tensor '%s' at offset %llu: size in bytes overflows 64 bits",
                       t->name, (unsigned long long)t->info_offset);
            goto fail;
        }
        t->nbytes = nb;
        uint32_t found;
        uint64_t slot = gguf__map_slot(f->tensor_map_, f->tensor_mask_, f->seed_, t->name,
                                       (const char *const *)&f->tensors[0].name, sizeof(gguf_tensor), &found);
        if (found) {
            gguf__fail(r, "duplicate tensor name '%s' at offset %llu (first defined at offset %llu)", t->name,
                       (unsigned long long)t->info_offset, (unsigned long long)f->tensors[found - 1].info_offset);
            goto fail;
        }
        f->tensor_map_[slot] = (uint32_t)(i + 1);
    }

    /* data section: after the infos, padded to the alignment */
    {
        uint64_t pos = r->pos, a = f->alignment;
        uint64_t doff = (pos + a - 1) / a * a;   /* pos <= size and a <= 2^31: no overflow */
        if (f->n_tensors > 0 && doff > size) {
            gguf__fail(r, "expected the data section at offset %llu (tensor infos end at %llu, aligned to %llu), "
                       "but the file ends at %llu", (unsigned long long)doff, (unsigned long long)pos,
                       (unsigned long long)a, (unsigned long long)size);
            goto fail;
        }
        if (doff > size) doff = size;
        f->data_offset = doff;
        const uint64_t avail = size - doff;
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            gguf_tensor *t = &f->tensors[i];
            if (t->offset > avail || t->nbytes > avail - t->offset) {
                gguf__fail(r, "tensor '%s' (info at offset %llu) has data at offset %llu of the data section "
                           "(which starts at %llu) with %llu bytes, running past the end of the file at %llu",
                           t->name, (unsigned long long)t->info_offset, (unsigned long long)t->offset,
                           (unsigned long long)doff, (unsigned long long)t->nbytes, (unsigned long long)size);
                goto fail;
            }
            t->data = data + doff + t->offset;
        }
    }
    return 0;

fail:
    {
        /* free what was built but keep the caller's error; leave f zeroed */
        gguf_file tmp = *f;
        tmp.mapped = 0;
        tmp.n_kv = kv_done; tmp.n_tensors = t_done;
        gguf_close(&tmp);
        memset(f, 0, sizeof *f);
    }
    return -1;
}

int gguf_open(gguf_file *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    if (err && errlen) err[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (err && errlen) snprintf(err, errlen, "%s: not a regular file", path);
        close(fd); return -1;
    }
    if (st.st_size == 0) {
        if (err && errlen) snprintf(err, errlen, "%s: expected 4-byte magic 'GGUF' at offset 0, but the file is empty", path);
        close(fd); return -1;
    }
    size_t size = (size_t)st.st_size;
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);   /* the mapping keeps the file */
    if (p == MAP_FAILED) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot mmap %llu bytes: %s", path, (unsigned long long)size, strerror(errno));
        return -1;
    }
    if (gguf_parse(f, (const uint8_t *)p, size, path, err, errlen) != 0) {
        munmap(p, size);
        return -1;
    }
    f->mapped = 1;
    return 0;
}

static uint32_t gguf__lookup(const uint32_t *map, uint64_t mask, uint64_t seed, const char *name,
                             const char *const *names0, size_t stride) {
    uint32_t found = 0;
    if (!map || !name) return 0;
    gguf__map_slot(map, mask, seed, name, names0, stride, &found);
    return found;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    if (!f || !f->kv) return NULL;
    uint32_t e = gguf__lookup(f->kv_map_, f->kv_mask_, f->seed_, key, (const char *const *)&f->kv[0].key, sizeof(gguf_kv));
    return e ? &f->kv[e - 1] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    if (!f || !f->tensors) return NULL;
    uint32_t e = gguf__lookup(f->tensor_map_, f->tensor_mask_, f->seed_, name,
                              (const char *const *)&f->tensors[0].name, sizeof(gguf_tensor));
    return e ? &f->tensors[e - 1] : NULL;
}

static int gguf__is_int(uint32_t t) {
    return t <= GGUF_KV_INT32 || t == GGUF_KV_BOOL || t == GGUF_KV_UINT64 || t == GGUF_KV_INT64;
}
static int gguf__is_signed(uint32_t t) {
    return t == GGUF_KV_INT8 || t == GGUF_KV_INT16 || t == GGUF_KV_INT32 || t == GGUF_KV_INT64;
}

int gguf_get_int(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    if (!gguf__is_int(kv->type)) return -1;
    if (kv->type == GGUF_KV_UINT64 && kv->v.u > (uint64_t)INT64_MAX) return -1;
    *out = kv->v.i;
    return 1;
}

int gguf_get_float(const gguf_file *f, const char *key, double *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type == GGUF_KV_FLOAT32 || kv->type == GGUF_KV_FLOAT64) { *out = kv->v.f; return 1; }
    if (!gguf__is_int(kv->type)) return -1;
    *out = gguf__is_signed(kv->type) ? (double)kv->v.i : (double)kv->v.u;
    return 1;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type != GGUF_KV_STRING) return -1;
    *out = kv->v.str;
    return 1;
}

int gguf_get_arr(const gguf_file *f, const char *key, int elem_type, const gguf_kv **out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type != GGUF_KV_ARRAY || (elem_type >= 0 && kv->arr_type != (uint32_t)elem_type)) return -1;
    *out = kv;
    return 1;
}

int gguf_arr_get_int(const gguf_kv *kv, uint64_t i, int64_t *out) {
    if (!kv || kv->type != GGUF_KV_ARRAY || i >= kv->arr_n || !gguf__is_int(kv->arr_type)) return -1;
    const uint8_t *p = kv->arr_data + i * gguf__kv_sizes[kv->arr_type];
    switch (kv->arr_type) {
    case GGUF_KV_UINT8: case GGUF_KV_BOOL: *out = p[0]; break;
    case GGUF_KV_INT8: *out = (int8_t)p[0]; break;
    case GGUF_KV_UINT16: { uint16_t x; memcpy(&x, p, 2); *out = x; break; }
    case GGUF_KV_INT16: { int16_t x; memcpy(&x, p, 2); *out = x; break; }
    case GGUF_KV_UINT32: { uint32_t x; memcpy(&x, p, 4); *out = x; break; }
    case GGUF_KV_INT32: { int32_t x; memcpy(&x, p, 4); *out = x; break; }
    case GGUF_KV_UINT64: { uint64_t x; memcpy(&x, p, 8); if (x > (uint64_t)INT64_MAX) return -1; *out = (int64_t)x; break; }
    case GGUF_KV_INT64: { int64_t x; memcpy(&x, p, 8); *out = x; break; }
    default: return -1;
    }
    return 1;
}

int gguf_arr_get_float(const gguf_kv *kv, uint64_t i, double *out) {
    if (!kv || kv->type != GGUF_KV_ARRAY || i >= kv->arr_n) return -1;
    if (kv->arr_type == GGUF_KV_FLOAT32) { float x; memcpy(&x, kv->arr_data + 4 * i, 4); *out = x; return 1; }
    if (kv->arr_type == GGUF_KV_FLOAT64) { double x; memcpy(&x, kv->arr_data + 8 * i, 8); *out = x; return 1; }
    int64_t v;
    if (gguf_arr_get_int(kv, i, &v) != 1) return -1;
    *out = (double)v;   /* UINT64 above INT64_MAX was refused above */
    return 1;
}

int gguf_str_eq(gguf_str a, const char *s) {
    size_t n = strlen(s);
    return a.n == n && (n == 0 || memcmp(a.s, s, n) == 0);
}

#ifdef __cplusplus
}
#endif
#endif /* GGUF_IMPLEMENTATION_DONE */
#endif /* GGUF_IMPLEMENTATION */
