/* qwen3moe_cuda.cu — the Qwen3-MoE forward pass on an NVIDIA GPU.
 *
 * Upload: every weight goes to the device once, in its GGUF quant type (experts
 * are not expanded); the small ones (norms, router) are converted to f32.
 *
 * Decode (one token): memory-bound. Each matvec reads every weight byte once;
 * the activation vector is quantized once to int8 blocks of 32 (scale per block,
 * like ggml's q8_1) so the quantized types run on dp4a; F32/F16/BF16 weights use
 * the f32 activations. The router's top-k, the expert dispatch and the argmax stay
 * on the device; the whole step is one CUDA graph whose token and position come
 * from device memory, replayed per token.
 *
 * Prefill (n tokens): compute-bound. Weights are dequantized to f16 into a
 * scratch buffer and multiplied with cuBLAS (tensor cores, f32 accumulate);
 * tokens are grouped by expert (one host round trip per layer for the counts);
 * attention runs causally over the cache, which already holds the batch.
 *
 * Every kernel has a one-line note on the bytes it moves and why it has its shape.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>
#include <cublas_v2.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utility>
#include <algorithm>
#include <vector>
#include "qwen3moe.h"
#include "gguf.h"

/* ------------------------------------------------------------------ helpers */
#define WARP 32
#define NTHR 256               /* threads per block of the matvec kernels: 8 warps */
#define ATT_CH 64              /* positions per attention chunk (decode): 4 blocks per SM at depth 8k, 4 steps per warp */
#define ATT_U 4                /* positions per warp and step in k_attn */
#define ATT_HB 8               /* query heads per attention block */
#define NB_MAX 512             /* tokens per prefill chunk */

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

#define CK(call)                                                                                    \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) {                                                                    \
            seterr(err, errlen, "%s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, __LINE__); \
            return -1;                                                                              \
        }                                                                                           \
    } while (0)
#define CKB(call)                                                                                   \
    do {                                                                                            \
        cublasStatus_t s_ = (call);                                                                 \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                          \
            seterr(err, errlen, "%s failed: cuBLAS status %d (%s:%d)", #call, (int)s_, __FILE__, __LINE__); \
            return -1;                                                                              \
        }                                                                                           \
    } while (0)
#define CKL() CK(cudaGetLastError())

/* Programmatic dependent launch: decode's kernels are captured with
 * cudaLaunchAttributeProgrammaticStreamSerialization, so the next kernel is launched
 * and its blocks made resident while the current one runs, instead of after it has
 * drained (~1-2 us a kernel, ~530 kernels a token). Each kernel starts with
 * griddepcontrol.wait, which returns once the previous grid has completed and its
 * writes are visible, before any global memory access: memory order is that of plain
 * launches, only launch latency and block scheduling overlap. It then lets its own
 * dependent launch (all its blocks are resident by then, so the waiting blocks of the
 * next kernel cannot starve it). Both are no-ops for a kernel launched without the
 * attribute (prefill, tests). */
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Asks L2 for bytes [p, p + n) one 128-byte line per thread and step (n small: a block's
 * rows). Used before pdl_enter on data no earlier kernel of the step writes (weights; the
 * KV rows of earlier positions), so that the DRAM round trip of a latency-bound kernel
 * overlaps the previous kernel instead of following it. */
__device__ __forceinline__ void l2_prefetch(const void *p, size_t n, int t, int nt) {
    const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)127);
    const char *end = (const char *)p + n;
    for (c += (size_t)t * 128; c < end; c += (size_t)nt * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(c));
}

static inline int cdiv(long a, long b) { return (int)((a + b - 1) / b); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* two 16-bit loads: blocks of most quant types are only 2-byte aligned */
__device__ __forceinline__ uint32_t ld2x16(const uint8_t *p) {
    const uint16_t *q = (const uint16_t *)p;
    return (uint32_t)q[0] | ((uint32_t)q[1] << 16);
}
__device__ __forceinline__ uint32_t ld32(const uint8_t *p) { return *(const uint32_t *)p; }
__device__ __forceinline__ float ldh(const uint8_t *p) {
    return __half2float(__ushort_as_half(*(const unsigned short *)p));
}
__device__ __forceinline__ float bf16f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
/* the f16 in the low / high half of a 32-bit word */
__device__ __forceinline__ float f16lo(uint32_t u) { return __half2float(__ushort_as_half((unsigned short)(u & 0xFFFF))); }
__device__ __forceinline__ float f16hi(uint32_t u) { return __half2float(__ushort_as_half((unsigned short)(u >> 16))); }

__device__ __forceinline__ int iq4_lookup(uint32_t v) {   /* 4 nibbles (low bits of each byte) -> 4 int8 table values */
    const uint32_t t0 = 0xBFAD9881u, t1 = 0xF6EADDCFu, t2 = 0x26190D01u, t3 = 0x71594535u;
    const uint32_t sel = (v & 0x7u) | ((v >> 4) & 0x70u) | ((v >> 8) & 0x700u) | ((v >> 12) & 0x7000u);
    const uint32_t a = __byte_perm(t0, t1, sel), b = __byte_perm(t2, t3, sel);
    const uint32_t mask = ((v >> 3) & 0x01010101u) * 0xFFu;
    return (int)((a & ~mask) | (b & mask));
}
__constant__ signed char c_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
/* one IQ4_NL table value from registers (the same table as c_kvalues_iq4nl): lanes that
 * index __constant__ memory with different values are serialized */
__device__ __forceinline__ int iq4_val(int q) {
    const uint32_t lo = __byte_perm(0xBFAD9881u, 0xF6EADDCFu, q & 7), hi = __byte_perm(0x26190D01u, 0x71594535u, q & 7);
    return (int)(int8_t)((q & 8 ? hi : lo) & 0xFFu);
}

static bool type_supported(uint32_t t) {
    switch (t) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K:
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K: case GGML_TYPE_IQ4_NL: case GGML_TYPE_IQ4_XS:
        return true;
    default: return false;
    }
}
__host__ __device__ static inline bool type_is_float_d(int t) { return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }

/* ======================================================================
 * Dequantization of 8 consecutive elements (prefill tiles, fallbacks, tests).
 * e0 is a multiple of 8; for float types fewer than 8 may remain (n).
 * ==================================================================== */
__device__ __forceinline__ void dq8_body(int type, const uint8_t *row, int e0, int n, float *y) {
    switch (type) {
    case GGML_TYPE_F32: for (int j = 0; j < n; j++) y[j] = __ldg((const float *)row + e0 + j); break;
    case GGML_TYPE_F16: for (int j = 0; j < n; j++) y[j] = __half2float(__ushort_as_half(__ldg((const unsigned short *)row + e0 + j))); break;
    case GGML_TYPE_BF16: for (int j = 0; j < n; j++) y[j] = bf16f(__ldg((const unsigned short *)row + e0 + j)); break;
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_IQ4_NL: {
        const int bs = type == GGML_TYPE_Q4_1 ? 20 : 18, qo = type == GGML_TYPE_Q4_1 ? 4 : 2;
        const uint8_t *b = row + (e0 / 32) * bs;
        const int i = e0 % 32, sh = i < 16 ? 0 : 4, o = i & 15;
        const float d = ldh(b), m = type == GGML_TYPE_Q4_1 ? ldh(b + 2) : 0.f;
        for (int j = 0; j < 8; j++) {
            const int q = (b[qo + o + j] >> sh) & 15;
            y[j] = type == GGML_TYPE_Q4_0 ? (float)(q - 8) * d : type == GGML_TYPE_Q4_1 ? (float)q * d + m : d * (float)iq4_val(q);
        }
        break;
    }
    case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: {
        const bool one = type == GGML_TYPE_Q5_1;
        const uint8_t *b = row + (e0 / 32) * (one ? 24 : 22);
        const int i = e0 % 32, sh = i < 16 ? 0 : 4, o = i & 15;
        const float d = ldh(b), m = one ? ldh(b + 2) : 0.f;
        const uint8_t *qhp = b + (one ? 4 : 2), *qs = b + (one ? 8 : 6);
        const uint32_t qh = (uint32_t)qhp[0] | ((uint32_t)qhp[1] << 8) | ((uint32_t)qhp[2] << 16) | ((uint32_t)qhp[3] << 24);
        for (int j = 0; j < 8; j++) {
            const int q = ((qs[o + j] >> sh) & 15) | (((qh >> (i + j)) & 1) << 4);
            y[j] = one ? (float)q * d + m : (float)(q - 16) * d;
        }
        break;
    }
    case GGML_TYPE_Q8_0: {
        const uint8_t *b = row + (e0 / 32) * 34;
        const float d = ldh(b);
        for (int j = 0; j < 8; j++) y[j] = (float)(int8_t)b[2 + e0 % 32 + j] * d;
        break;
    }
    case GGML_TYPE_Q2_K: {
        const uint8_t *b = row + (e0 / 256) * 84;
        const int r = e0 % 256, h = r / 128, s = (r % 128) / 32, k = (r % 32) / 16, l = r % 16;
        const uint8_t sc = b[8 * h + 2 * s + k];
        const float dl = ldh(b + 80) * (float)(sc & 15), ml = ldh(b + 82) * (float)(sc >> 4);
        for (int j = 0; j < 8; j++) y[j] = dl * (float)((b[16 + 32 * h + 16 * k + l + j] >> (2 * s)) & 3) - ml;
        break;
    }
    case GGML_TYPE_Q3_K: {
        const uint8_t *b = row + (e0 / 256) * 110;
        const int r = e0 % 256, h = r / 128, s = (r % 128) / 32, k = (r % 32) / 16, l = r % 16;
        const int g = 8 * h + 2 * s + k;
        const uint8_t *sp = b + 96;
        const int lo = g < 8 ? (sp[g] & 15) : (sp[g - 8] >> 4), hi = (sp[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
        const float dl = ldh(b + 108) * (float)((lo | (hi << 4)) - 32);
        for (int j = 0; j < 8; j++) {
            const int q = (b[32 + 32 * h + 16 * k + l + j] >> (2 * s)) & 3;
            const int hb = (b[16 * k + l + j] >> (4 * h + s)) & 1;
            y[j] = dl * (float)(q - (hb ? 0 : 4));
        }
        break;
    }
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: {
        const bool five = type == GGML_TYPE_Q5_K;
        const uint8_t *b = row + (e0 / 256) * (five ? 176 : 144);
        const int r = e0 % 256, c = r / 64, u = r % 64, g = 2 * c + (u >= 32), l = u % 32;
        const uint8_t *s = b + 4;
        int sc, m;
        if (g < 4) { sc = s[g] & 63; m = s[g + 4] & 63; }
        else { sc = (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4); m = (s[g + 4] >> 4) | ((s[g] >> 6) << 4); }
        const float dl = ldh(b) * (float)sc, ml = ldh(b + 2) * (float)m;
        const uint8_t *qs = b + (five ? 48 : 16) + 32 * c;
        for (int j = 0; j < 8; j++) {
            int q = (qs[l + j] >> (u >= 32 ? 4 : 0)) & 15;
            if (five) q |= ((b[16 + l + j] >> g) & 1) << 4;
            y[j] = dl * (float)q - ml;
        }
        break;
    }
    case GGML_TYPE_Q6_K: {
        const uint8_t *b = row + (e0 / 256) * 210;
        const int r = e0 % 256, h = r / 128, rr = r % 128, t = rr / 32, l = rr % 32;
        const float dd = ldh(b + 208) * (float)(int8_t)b[192 + 8 * h + 2 * t + l / 16];
        for (int j = 0; j < 8; j++) {
            const int q = ((b[64 * h + l + j + 32 * (t & 1)] >> (4 * (t >> 1))) & 15) | (((b[128 + 32 * h + l + j] >> (2 * t)) & 3) << 4);
            y[j] = dd * (float)(q - 32);
        }
        break;
    }
    case GGML_TYPE_IQ4_XS: {
        const uint8_t *b = row + (e0 / 256) * 136;
        const int r = e0 % 256, ib = r / 32, u = r % 32;
        const uint16_t sh = (uint16_t)(b[2] | (b[3] << 8));
        const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4);
        const float dl = ldh(b) * (float)(ls - 32);
        for (int j = 0; j < 8; j++) y[j] = dl * (float)iq4_val((b[8 + 16 * ib + (u & 15) + j] >> (u >= 16 ? 4 : 0)) & 15);
        break;
    }
    default: for (int j = 0; j < n; j++) y[j] = 0.f; break;
    }
}
/* the runtime-type version (decode fallbacks, embedding, tests); the prefill
 * dequantizer inlines dq8_body with a constant type instead */
__device__ void dq8(int type, const uint8_t *row, int e0, int n, float *y) { dq8_body(type, row, e0, n, y); }

/* Dequantize rows [0, nrows) of a weight to f16, row r to out + r*ld. Reads the
 * quantized rows once and writes 2 bytes per element; one thread per 8 elements. */
__global__ void k_dequant_f16(const uint8_t *__restrict__ w, int type, int ncols, size_t rb, int nrows, __half *__restrict__ out, long ld) {
    const int per_row = (ncols + 7) / 8;
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)per_row * nrows) return;
    const int r = (int)(i / per_row), e0 = (int)(i % per_row) * 8;
    const int n = min(8, ncols - e0);
    float y[8];
    dq8(type, w + (size_t)r * rb, e0, n, y);
    __half *o = out + (size_t)r * ld + e0;
    for (int j = 0; j < n; j++) o[j] = __float2half(y[j]);
}

/* Flat dequantization of a contiguous run of whole quant blocks (rows of width ncols
 * stored back to back, so element g lives in quant block g / QK at byte (g / QK) * BSZ)
 * to a dense f16 array out[g] (the scratch layout of prefill: ld == ncols). Moves
 * BSZ/QK bytes in and 2 bytes out per element. Shaped for bandwidth: a block of
 * DQF_THREADS threads owns DQF_TILE consecutive elements; it stages the tile's quant
 * bytes in shared memory with one 16-byte load per thread (the K-quant blocks of
 * 144/176/210 bytes are not 16-byte aligned, so each thread's own bytes could only be
 * read with byte loads from global memory), then each thread decodes 8 elements with
 * the type fixed at compile time (no switch, scales decoded from shared memory) and
 * writes them with one 16-byte store. 32-bit indices: the caller keeps n < 2^31. */
#define DQF_THREADS 256
#define DQF_TILE (DQF_THREADS * 8)
#define DQF_SMEM (DQF_TILE / 32 * 34 + 32)   /* the largest tile: 64 Q8_0 blocks, plus alignment slack */
template <int T> struct QT;   /* the block geometry of each quant type: BLK elements in BS bytes (below) */
template <int T, int QK = QT<T>::BLK, int BSZ = QT<T>::BS>
__global__ void __launch_bounds__(DQF_THREADS) k_dequant_flat(const uint8_t *__restrict__ w, unsigned n, __half *__restrict__ out, unsigned seg,
                                                               size_t ostride) {
    __shared__ __align__(16) uint8_t sm[DQF_SMEM];
    const unsigned t0 = blockIdx.x * DQF_TILE;                         /* first element of the tile */
    const size_t base = (size_t)w, end = base + (size_t)(n / QK) * BSZ;  /* the call's quant bytes */
    const size_t b0 = base + (size_t)(t0 / QK) * BSZ;
    const size_t b1 = min(end, b0 + (size_t)(DQF_TILE / QK) * BSZ);
    const size_t a0 = b0 & ~(size_t)15;
    const int nchunk = (int)((b1 - a0 + 15) / 16);
    for (int c = threadIdx.x; c < nchunk; c += DQF_THREADS) {
        const size_t p = a0 + 16 * (size_t)c;
        if (p >= base && p + 16 <= end) {
            *(uint4 *)(sm + 16 * c) = __ldg((const uint4 *)p);
        } else {   /* a chunk that straddles the call's first or last byte */
            for (int j = 0; j < 16; j++)
                if (p + j >= base && p + j < end) sm[16 * c + j] = __ldg((const uint8_t *)(p + j));
        }
    }
    __syncthreads();
    const unsigned e = t0 + 8 * threadIdx.x;
    if (e >= n) return;
    float y[8];
    dq8_body(T, sm + (b0 - a0), 8 * threadIdx.x, 8, y);
    uint4 v;
    __half2 *h2 = (__half2 *)&v;
#pragma unroll
    for (int j = 0; j < 4; j++) h2[j] = __floats2half2_rn(y[2 * j], y[2 * j + 1]);
    /* seg != 0: element e goes to segment e / seg at out + (e / seg) * ostride (gate and up of
     * one expert side by side, one GEMM of m = 2F) */
    *(uint4 *)(out + (seg ? (size_t)(e / seg) * ostride + e % seg : (size_t)e)) = v;
}

/* ======================================================================
 * Quantized matvec building blocks. One warp walks a row in steps of 256
 * elements; each lane takes 8 weights per step, chosen so that the lanes of a
 * warp read one contiguous run of quant bytes (coalesced) and adjacent int8
 * activations. x is int8 in blocks of 32 with an f32 scale per block.
 * ==================================================================== */
struct XPos { int p0, p1, g0, g1; };


#define QT_32(TYPE)                                                                                  \
    static __device__ __forceinline__ bool xmap(int it, int lane, int nb, XPos &p) {                 \
        const int b = it * 8 + lane / 4, j = lane % 4;                                               \
        if (b >= nb) return false;                                                                   \
        p.p0 = 32 * b + 4 * j; p.p1 = p.p0 + 16; p.g0 = p.g1 = b;                                    \
        return true;                                                                                 \
    }

template <> struct QT<GGML_TYPE_Q4_0> {
    enum { BS = 18, BLK = 32 };
    QT_32(Q4_0)
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + (it * 8 + lane / 4) * 18;
        const uint32_t q = ld2x16(b + 2 + 4 * (lane % 4));
        const int sumi = __dp4a((int)(q & 0x0F0F0F0Fu), x0, __dp4a((int)((q >> 4) & 0x0F0F0F0Fu), x1, 0));
        return ldh(b) * d0 * (float)(sumi - 8 * (s0 + s1));
    }
};
template <> struct QT<GGML_TYPE_Q4_1> {
    enum { BS = 20, BLK = 32 };
    QT_32(Q4_1)
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + (it * 8 + lane / 4) * 20;
        const uint32_t q = ld2x16(b + 4 + 4 * (lane % 4));
        const int sumi = __dp4a((int)(q & 0x0F0F0F0Fu), x0, __dp4a((int)((q >> 4) & 0x0F0F0F0Fu), x1, 0));
        return ldh(b) * d0 * (float)sumi + ldh(b + 2) * d0 * (float)(s0 + s1);
    }
};
__device__ __forceinline__ uint32_t spread4(uint32_t h) {   /* 4 bits -> bit 4 of each byte */
    return ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
}
/* Q5_0/Q5_1: lane part j of a block's 5-bit quants (nibbles at qs, 5th bits at qh) dotted with
 * the int8 activations x0 (elements 4j..4j+3) and x1 (16+4j..16+4j+3) */
__device__ __forceinline__ int q5_sumi(const uint8_t *qs, const uint8_t *qhp, int j, int x0, int x1) {
    const uint32_t q = ld2x16(qs + 4 * j), qh = ld2x16(qhp);
    const uint32_t lo = (q & 0x0F0F0F0Fu) | spread4((qh >> (4 * j)) & 15u);
    const uint32_t hi = ((q >> 4) & 0x0F0F0F0Fu) | spread4((qh >> (4 * j + 16)) & 15u);
    return __dp4a((int)lo, x0, __dp4a((int)hi, x1, 0));
}
template <> struct QT<GGML_TYPE_Q5_0> {
    enum { BS = 22, BLK = 32 };
    QT_32(Q5_0)
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + (it * 8 + lane / 4) * 22;
        const int sumi = q5_sumi(b + 6, b + 2, lane % 4, x0, x1);
        return ldh(b) * d0 * (float)(sumi - 16 * (s0 + s1));
    }
};
template <> struct QT<GGML_TYPE_Q5_1> {
    enum { BS = 24, BLK = 32 };
    QT_32(Q5_1)
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + (it * 8 + lane / 4) * 24;
        const int sumi = q5_sumi(b + 8, b + 4, lane % 4, x0, x1);
        return ldh(b) * d0 * (float)sumi + ldh(b + 2) * d0 * (float)(s0 + s1);
    }
};
template <> struct QT<GGML_TYPE_IQ4_NL> {
    enum { BS = 18, BLK = 32 };
    QT_32(IQ4_NL)
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + (it * 8 + lane / 4) * 18;
        const uint32_t q = ld2x16(b + 2 + 4 * (lane % 4));
        const int sumi = __dp4a(iq4_lookup(q & 0x0F0F0F0Fu), x0, __dp4a(iq4_lookup((q >> 4) & 0x0F0F0F0Fu), x1, 0));
        return ldh(b) * d0 * (float)sumi;
    }
};
template <> struct QT<GGML_TYPE_Q8_0> {
    enum { BS = 34, BLK = 32 };
    static __device__ __forceinline__ bool xmap(int it, int lane, int nb, XPos &p) {
        const int b = it * 8 + lane / 4, j = lane % 4;
        if (b >= nb) return false;
        p.p0 = 32 * b + 8 * j; p.p1 = p.p0 + 4; p.g0 = p.g1 = b;
        return true;
    }
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + (it * 8 + lane / 4) * 34;
        const uint8_t *q = b + 2 + 8 * (lane % 4);
        const int sumi = __dp4a((int)ld2x16(q), x0, __dp4a((int)ld2x16(q + 4), x1, 0));
        return ldh(b) * d0 * (float)sumi;
    }
};
template <> struct QT<GGML_TYPE_IQ4_XS> {
    enum { BS = 136, BLK = 256 };
    static __device__ __forceinline__ bool xmap(int it, int lane, int nb, XPos &p) {
        const int ib = lane / 4, j = lane % 4;
        p.p0 = it * 256 + 32 * ib + 4 * j; p.p1 = p.p0 + 16; p.g0 = p.g1 = it * 8 + ib;
        return true;
    }
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + it * 136;
        const int ib = lane / 4, j = lane % 4;
        const uint32_t q = ld32(b + 8 + 16 * ib + 4 * j);
        const uint32_t sh = *(const unsigned short *)(b + 2);
        const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4);
        const int sumi = __dp4a(iq4_lookup(q & 0x0F0F0F0Fu), x0, __dp4a(iq4_lookup((q >> 4) & 0x0F0F0F0Fu), x1, 0));
        return ldh(b) * (float)(ls - 32) * d0 * (float)sumi;
    }
};
/* Q2_K and Q3_K: lane = (word w of the 2-bit quants, pair of bit planes) */
#define QT_K23_XMAP                                                                                  \
    static __device__ __forceinline__ bool xmap(int it, int lane, int nb, XPos &p) {                 \
        const int w = lane % 16, s0 = 2 * (lane / 16), h = w / 8, k = (w % 8) / 4, l = 4 * (w % 4);  \
        p.p0 = it * 256 + 128 * h + 32 * s0 + 16 * k + l; p.p1 = p.p0 + 32;                          \
        p.g0 = it * 8 + 4 * h + s0; p.g1 = p.g0 + 1;                                                 \
        return true;                                                                                 \
    }
template <> struct QT<GGML_TYPE_Q2_K> {
    enum { BS = 84, BLK = 256 };
    QT_K23_XMAP
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + it * 84;
        const int w = lane % 16, sa = 2 * (lane / 16), h = w / 8, k = (w % 8) / 4;
        const uint32_t q = ld32(b + 16 + 4 * w);
        const int sc0 = b[8 * h + 2 * sa + k], sc1 = b[8 * h + 2 * sa + 2 + k];
        const int v0 = __dp4a((int)((q >> (2 * sa)) & 0x03030303u), x0, 0);
        const int v1 = __dp4a((int)((q >> (2 * sa + 2)) & 0x03030303u), x1, 0);
        return ldh(b + 80) * ((float)(sc0 & 15) * d0 * (float)v0 + (float)(sc1 & 15) * d1 * (float)v1) -
               ldh(b + 82) * ((float)(sc0 >> 4) * d0 * (float)s0 + (float)(sc1 >> 4) * d1 * (float)s1);
    }
};
__device__ __forceinline__ int q3k_scale(const uint8_t *sp, int g) {
    const int lo = g < 8 ? (sp[g] & 15) : (sp[g - 8] >> 4), hi = (sp[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
    return (lo | (hi << 4)) - 32;
}
template <> struct QT<GGML_TYPE_Q3_K> {
    enum { BS = 110, BLK = 256 };
    QT_K23_XMAP
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + it * 110;
        const int w = lane % 16, sa = 2 * (lane / 16), h = w / 8, k = (w % 8) / 4;
        const uint32_t q = ld2x16(b + 32 + 4 * w), hm = ld2x16(b + 4 * (w % 8));
        const uint32_t a0 = ((q >> (2 * sa)) & 0x03030303u) | (((hm >> (4 * h + sa)) & 0x01010101u) << 2);
        const uint32_t a1 = ((q >> (2 * sa + 2)) & 0x03030303u) | (((hm >> (4 * h + sa + 1)) & 0x01010101u) << 2);
        const int v0 = __dp4a((int)a0, x0, 0) - 4 * s0, v1 = __dp4a((int)a1, x1, 0) - 4 * s1;
        const int sc0 = q3k_scale(b + 96, 8 * h + 2 * sa + k), sc1 = q3k_scale(b + 96, 8 * h + 2 * sa + 2 + k);
        return ldh(b + 108) * ((float)sc0 * d0 * (float)v0 + (float)sc1 * d1 * (float)v1);
    }
};
__device__ __forceinline__ void k4_scale(const uint8_t *s, int j, int &sc, int &m) {
    if (j < 4) { sc = s[j] & 63; m = s[j + 4] & 63; }
    else { sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4); m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
}
#define QT_K45_XMAP                                                                                  \
    static __device__ __forceinline__ bool xmap(int it, int lane, int nb, XPos &p) {                 \
        const int c = lane / 8, t = lane % 8;                                                        \
        p.p0 = it * 256 + 64 * c + 4 * t; p.p1 = p.p0 + 32; p.g0 = it * 8 + 2 * c; p.g1 = p.g0 + 1;  \
        return true;                                                                                 \
    }
template <> struct QT<GGML_TYPE_Q4_K> {
    enum { BS = 144, BLK = 256 };
    QT_K45_XMAP
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + it * 144;
        const int c = lane / 8, t = lane % 8;
        const uint32_t q = ld32(b + 16 + 32 * c + 4 * t);
        int sc0, m0, sc1, m1;
        k4_scale(b + 4, 2 * c, sc0, m0);
        k4_scale(b + 4, 2 * c + 1, sc1, m1);
        const int v0 = __dp4a((int)(q & 0x0F0F0F0Fu), x0, 0), v1 = __dp4a((int)((q >> 4) & 0x0F0F0F0Fu), x1, 0);
        return ldh(b) * ((float)sc0 * d0 * (float)v0 + (float)sc1 * d1 * (float)v1) -
               ldh(b + 2) * ((float)m0 * d0 * (float)s0 + (float)m1 * d1 * (float)s1);
    }
};
template <> struct QT<GGML_TYPE_Q5_K> {
    enum { BS = 176, BLK = 256 };
    QT_K45_XMAP
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + it * 176;
        const int c = lane / 8, t = lane % 8;
        const uint32_t q = ld32(b + 48 + 32 * c + 4 * t), qh = ld32(b + 16 + 4 * t);
        int sc0, m0, sc1, m1;
        k4_scale(b + 4, 2 * c, sc0, m0);
        k4_scale(b + 4, 2 * c + 1, sc1, m1);
        const uint32_t lo = (q & 0x0F0F0F0Fu) | (((qh >> (2 * c)) & 0x01010101u) << 4);
        const uint32_t hi = ((q >> 4) & 0x0F0F0F0Fu) | (((qh >> (2 * c + 1)) & 0x01010101u) << 4);
        const int v0 = __dp4a((int)lo, x0, 0), v1 = __dp4a((int)hi, x1, 0);
        return ldh(b) * ((float)sc0 * d0 * (float)v0 + (float)sc1 * d1 * (float)v1) -
               ldh(b + 2) * ((float)m0 * d0 * (float)s0 + (float)m1 * d1 * (float)s1);
    }
};
template <> struct QT<GGML_TYPE_Q6_K> {
    enum { BS = 210, BLK = 256 };
    static __device__ __forceinline__ bool xmap(int it, int lane, int nb, XPos &p) {
        const int h = lane / 16, m = lane % 16, t1 = m / 8, l0 = 4 * (m % 8);
        p.p0 = it * 256 + 128 * h + 32 * t1 + l0; p.p1 = p.p0 + 64;
        p.g0 = it * 8 + 4 * h + t1; p.g1 = p.g0 + 2;
        return true;
    }
    static __device__ __forceinline__ float dot(const uint8_t *row, int it, int lane, int x0, int x1, int s0, int s1, float d0, float d1) {
        const uint8_t *b = row + it * 210;
        const int h = lane / 16, m = lane % 16, t1 = m / 8, l0 = 4 * (m % 8);
        const uint32_t ql = ld2x16(b + 64 * h + 32 * t1 + l0), qh = ld2x16(b + 128 + 32 * h + l0);
        const uint32_t a0 = (ql & 0x0F0F0F0Fu) | (((qh >> (2 * t1)) & 0x03030303u) << 4);
        const uint32_t a1 = ((ql >> 4) & 0x0F0F0F0Fu) | (((qh >> (2 * t1 + 4)) & 0x03030303u) << 4);
        const int v0 = __dp4a((int)a0, x0, 0) - 32 * s0, v1 = __dp4a((int)a1, x1, 0) - 32 * s1;
        const int hi16 = l0 >= 16;
        const int sc0 = (int8_t)b[192 + 8 * h + 2 * t1 + hi16], sc1 = (int8_t)b[192 + 8 * h + 2 * t1 + 4 + hi16];
        return ldh(b + 208) * ((float)sc0 * d0 * (float)v0 + (float)sc1 * d1 * (float)v1);
    }
};

/* R rows (w0, w0+rb, ...) of a quantized type against int8 x; partial sums per lane. */
template <int T, int R>
__device__ __forceinline__ void rows_q(const uint8_t *w0, size_t rb, int nvalid, int ncols, const int8_t *__restrict__ xq,
                                       const float *__restrict__ xd, float *acc) {
    const int lane = threadIdx.x % WARP;
    const int nb = ncols / QT<T>::BLK, niter = (ncols + 255) / 256;
#pragma unroll 2
    for (int it = 0; it < niter; it++) {
        XPos p;
        if (!QT<T>::xmap(it, lane, nb, p)) continue;
        const int x0 = __ldg((const int *)(xq + p.p0)), x1 = __ldg((const int *)(xq + p.p1));
        const float d0 = __ldg(xd + p.g0), d1 = __ldg(xd + p.g1);
        const int s0 = __dp4a(x0, 0x01010101, 0), s1 = __dp4a(x1, 0x01010101, 0);
#pragma unroll
        for (int r = 0; r < R; r++)
            if (r < nvalid) acc[r] += QT<T>::dot(w0 + (size_t)r * rb, it, lane, x0, x1, s0, s1, d0, d1);
    }
}

/* R rows of a float type against f32 x. */
template <int R>
__device__ __forceinline__ void rows_f(int type, const uint8_t *w0, size_t rb, int nvalid, int ncols, const float *__restrict__ xf, float *acc) {
    const int lane = threadIdx.x % WARP;
    if ((ncols & 7) == 0) {
        for (int e = lane * 8; e < ncols; e += 256) {
            const float4 xa = *(const float4 *)(xf + e), xb = *(const float4 *)(xf + e + 4);   /* x may be in shared memory: no __ldg */
            const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
            for (int r = 0; r < R; r++) {
                if (r >= nvalid) continue;
                const uint8_t *row = w0 + (size_t)r * rb;
                float wv[8];
                if (type == GGML_TYPE_F32) {
                    const float4 a = __ldg((const float4 *)((const float *)row + e)), b = __ldg((const float4 *)((const float *)row + e + 4));
                    wv[0] = a.x; wv[1] = a.y; wv[2] = a.z; wv[3] = a.w; wv[4] = b.x; wv[5] = b.y; wv[6] = b.z; wv[7] = b.w;
                } else {
                    const uint4 u = __ldg((const uint4 *)((const uint16_t *)row + e));
                    const uint32_t uu[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        if (type == GGML_TYPE_F16) {
                            wv[2 * j] = f16lo(uu[j]);
                            wv[2 * j + 1] = f16hi(uu[j]);
                        } else {
                            wv[2 * j] = __uint_as_float(uu[j] << 16);
                            wv[2 * j + 1] = __uint_as_float(uu[j] & 0xFFFF0000u);
                        }
                    }
                }
                float s = 0.f;
#pragma unroll
                for (int j = 0; j < 8; j++) s = fmaf(wv[j], xv[j], s);
                acc[r] += s;
            }
        }
    } else {
        for (int e = lane; e < ncols; e += WARP) {
            const float xv = xf[e];
#pragma unroll
            for (int r = 0; r < R; r++) {
                if (r >= nvalid) continue;
                const uint8_t *row = w0 + (size_t)r * rb;
                float wv;
                if (type == GGML_TYPE_F32) wv = __ldg((const float *)row + e);
                else if (type == GGML_TYPE_F16) wv = __half2float(__ushort_as_half(__ldg((const unsigned short *)row + e)));
                else wv = bf16f(__ldg((const unsigned short *)row + e));
                acc[r] = fmaf(wv, xv, acc[r]);
            }
        }
    }
}

/* Slow exact fallback (QWEN3MOE_MMV=f32): any type, dequantized to f32, f32 x. */
template <int R>
__device__ __forceinline__ void rows_dq(int type, const uint8_t *w0, size_t rb, int nvalid, int ncols, const float *__restrict__ xf, float *acc) {
    const int lane = threadIdx.x % WARP;
    for (int e = lane * 8; e < ncols; e += 256) {
        const int n = min(8, ncols - e);
        for (int r = 0; r < R; r++) {
            if (r >= nvalid) continue;
            float y[8];
            dq8(type, w0 + (size_t)r * rb, e, n, y);
            for (int j = 0; j < n; j++) acc[r] = fmaf(y[j], xf[e + j], acc[r]);
        }
    }
}

/* the quantized types with an int8-activation dot (QT<T>): every per-type switch over them */
#define QUANT_TYPES(X)                                                                                              \
    X(GGML_TYPE_Q4_0) X(GGML_TYPE_Q4_1) X(GGML_TYPE_Q5_0) X(GGML_TYPE_Q5_1) X(GGML_TYPE_Q8_0) X(GGML_TYPE_IQ4_NL) \
    X(GGML_TYPE_IQ4_XS) X(GGML_TYPE_Q2_K) X(GGML_TYPE_Q3_K) X(GGML_TYPE_Q4_K) X(GGML_TYPE_Q5_K) X(GGML_TYPE_Q6_K)

template <int R>
__device__ __forceinline__ void rows_any(int type, const uint8_t *w0, size_t rb, int nvalid, int ncols, const float *xf, const int8_t *xq,
                                         const float *xd, float *acc) {
    if (!xq) {   /* no int8 activations given: float types, or the exact fallback */
        if (type_is_float_d(type)) rows_f<R>(type, w0, rb, nvalid, ncols, xf, acc);
        else rows_dq<R>(type, w0, rb, nvalid, ncols, xf, acc);
        return;
    }
#define RQ_CASE(T) case T: rows_q<T, R>(w0, rb, nvalid, ncols, xq, xd, acc); break;
    switch (type) {
    QUANT_TYPES(RQ_CASE)
#undef RQ_CASE
    default: rows_f<R>(type, w0, rb, nvalid, ncols, xf, acc); break;
    }
}

/* ---- staged variant: each warp first copies its rows (or a chunk of them) into
 * shared memory with 16-byte streaming loads, all issued before any is used, then
 * runs the per-type dot products out of shared memory. This keeps many wide loads
 * in flight per lane whatever the block layout (most quant blocks are only 2-byte
 * aligned, so direct loads would be 2-4 bytes wide). */
/* Decode's staged kernels come specialized for the quant types of llama.cpp's common mixes
 * (one type, no switch over twelve: fewer registers and no spills), the template argument
 * being the ggml type; SPEC_NONE is the generic kernel, for every type and for f32 x. */
#define SPEC_NONE (-1)
#define SPEC_TYPES(X) X(GGML_TYPE_Q4_0) X(GGML_TYPE_Q8_0) X(GGML_TYPE_Q4_K) X(GGML_TYPE_Q5_K) X(GGML_TYPE_Q6_K)
static inline int spec_type(int type, bool int8_x) {
#define SPEC_CASE(T) case T:
    if (int8_x) switch (type) { SPEC_TYPES(SPEC_CASE) return type; default: break; }
#undef SPEC_CASE
    return SPEC_NONE;
}
#define STAGE_MAXV 5                        /* 16-byte vectors per lane per row: rows of up to 2560 staged bytes */
#define STAGE_CAP_MAX (STAGE_MAXV * 512)
/* 16-byte global -> shared copy that needs no registers (sm_80+), L2 only */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    const unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sa), "l"(gmem) : "memory");
}
/* 4 bytes; .ca is the only form this size has, so only for data no L1 line of this SM holds
 * stale (in the persistent kernel: after a barrier's acquire, which invalidates L1) */
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem) {
    const unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(sa), "l"(gmem) : "memory");
}
/* An L2 policy that marks lines to leave first (data read once a step: weight rows, the
 * chunked attention's K/V rows), and the 16-byte copy that carries it */
__device__ __forceinline__ uint64_t l2_evict_first() {
    uint64_t pol;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    return pol;
}
__device__ __forceinline__ void cp_async16_hint(unsigned sa, const void *gmem, uint64_t pol) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(sa), "l"(gmem), "l"(pol) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait_group() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
/* wait until at most one committed group of this thread's copies is still in flight */
__device__ __forceinline__ void cp_async_wait_but_one() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
__device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
/* staging capacity per row for a row of rb bytes */
static inline int stage_cap(size_t rb) { return (int)std::min((size_t)STAGE_CAP_MAX, (rb + 31 + 15) / 16 * 16); }

/* Issue the 16-byte copies of bytes [cb0, cb1) of R rows into the warp's staging buffer:
 * rows r < split come from w0 + r*rb, the others from w1 + (r-split)*rb; nv0/nv1 = valid
 * rows of each part. The copies carry no registers, so a kernel can issue them for
 * weights (never written) before its grid dependency wait and let them land meanwhile. */
/* bytes [gp, gp + n) as whole 16-byte lines from gp's: how a row is staged (staged_row reads
 * it back at the start's offset within its line) */
__device__ __forceinline__ const uint8_t *line16(const uint8_t *gp) { return (const uint8_t *)((uintptr_t)gp & ~(uintptr_t)15); }
__device__ __forceinline__ int lines16(const uint8_t *gp, size_t n) { return ((int)((uintptr_t)gp & 15) + (int)n + 15) / 16; }
/* n bytes from gp (ok: else nothing) into dst, from the 16-byte boundary below gp, by the
 * warp. EVICT_FIRST (the persistent kernel's weight rows, see rows_issue_p): the loop kept
 * rolled for code size, and the lines marked to leave L2 first. */
template <bool EVICT_FIRST = false>
__device__ __forceinline__ void row_issue16(const uint8_t *gp, size_t n, uint8_t *dst, bool ok) {
    const uint8_t *base = line16(gp);
    const int nv = ok ? lines16(gp, n) : 0;
    if (EVICT_FIRST) {
        const uint64_t pol = l2_evict_first();
        const unsigned sa = (unsigned)__cvta_generic_to_shared(dst);
#pragma unroll 1
        for (int k = threadIdx.x % WARP; k < nv; k += WARP) cp_async16_hint(sa + 16 * k, base + 16 * k, pol);
    } else {
        for (int k = threadIdx.x % WARP; k < nv; k += WARP) cp_async16(dst + 16 * k, base + 16 * k);
    }
}
/* Bulk copies (the TMA unit, sm_90) that complete on an mbarrier in shared memory: one
 * instruction a row, where cp.async takes one a lane per 16 bytes and stalls its warp at
 * issue once the SM's outstanding copies are full (bench/NOTES.md P106). */
__device__ __forceinline__ void mb_init(uint32_t mb) { asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(mb) : "memory"); }
__device__ __forceinline__ void mb_expect(uint32_t mb, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mb), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mb_wait(uint32_t mb, uint32_t parity) {
    asm volatile("{\n .reg .pred p;\n W%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W%=;\n}" ::"r"(mb), "r"(parity) : "memory");
}
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void *src, uint32_t n, uint32_t mb, uint64_t pol) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(dst), "l"(src), "r"(n), "r"(mb), "l"(pol)
                 : "memory");
}
template <int R>
__device__ __forceinline__ void rows_issue(const uint8_t *w0, const uint8_t *w1, int split, size_t rb, int nv0, int nv1, size_t cb0, size_t cb1,
                                           uint8_t *buf, int cap) {
#pragma unroll
    for (int r = 0; r < R; r++)
        row_issue16((r < split ? w0 + (size_t)r * rb : w1 + (size_t)(r - split) * rb) + cb0, cb1 - cb0, buf + r * cap,
                    r < split ? r < nv0 : r - split < nv1);
}
/* staged bytes per 256 columns, and how many 256-column steps fit the staging cap at once */
template <int T> __device__ __forceinline__ int stage_sb() { return QT<T>::BS * (256 / QT<T>::BLK); }
template <int MV> __device__ __forceinline__ int stage_ipc(int sb, int cap) { return max(1, min(MV * 512 - 31, cap - 31) / sb); }

/* R rows staged at once (rows_issue's layout), then dot products against int8 x out of
 * shared memory. pre: the caller already issued the first chunk (rows_issue with the
 * same arguments, cb0 = 0). x (int8 + scales) is read through generic pointers: the
 * kernels below stage it in shared memory first. MV = 16-byte vectors per lane per
 * staged row. */
template <int T, int R, int MV>
__device__ __forceinline__ void rows_qs(const uint8_t *w0, const uint8_t *w1, int split, size_t rb, int nv0, int nv1, int ncols,
                                        const int8_t *xq, const float *xd, float *acc, uint8_t *buf, int cap, bool pre) {
    const int lane = threadIdx.x % WARP;
    const int SB = stage_sb<T>();
    const int nb = ncols / QT<T>::BLK, niter = (ncols + 255) / 256;
    const int ipc = stage_ipc<MV>(SB, cap);
    for (int it0 = 0; it0 < niter; it0 += ipc) {
        const int it1 = min(niter, it0 + ipc);
        const size_t cb0 = (size_t)it0 * SB, cb1 = min((size_t)it1 * SB, rb);
        if (!(pre && it0 == 0)) rows_issue<R>(w0, w1, split, rb, nv0, nv1, cb0, cb1, buf, cap);
        const uint8_t *srow[R];
        bool ok[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            ok[r] = r < split ? r < nv0 : r - split < nv1;
            const uint8_t *gp = (r < split ? w0 + (size_t)r * rb : w1 + (size_t)(r - split) * rb) + cb0;
            srow[r] = buf + r * cap + (int)((uintptr_t)gp & 15) - cb0;
        }
        cp_async_wait_all();
        __syncwarp();
        for (int it = it0; it < it1; it++) {
            XPos p;
            if (!QT<T>::xmap(it, lane, nb, p)) continue;
            const int x0 = *(const int *)(xq + p.p0), x1 = *(const int *)(xq + p.p1);
            const float d0 = xd[p.g0], d1 = xd[p.g1];
            const int s0 = __dp4a(x0, 0x01010101, 0), s1 = __dp4a(x1, 0x01010101, 0);
#pragma unroll
            for (int r = 0; r < R; r++)
                if (ok[r]) acc[r] += QT<T>::dot(srow[r], it, lane, x0, x1, s0, s1, d0, d1);
        }
        __syncwarp();
    }
}

/* The first chunk of rows_qs<T, R, MV>'s copies for a type known only at run time
 * (staged path: quantized types with int8 x). Returns whether it issued anything. */
template <int R, int MV, int TT>
__device__ __forceinline__ bool rows_pre_issue(int type, const uint8_t *w0, const uint8_t *w1, int split, size_t rb, int nv0, int nv1, uint8_t *buf,
                                               int cap) {
    int sb;
    if constexpr (TT >= 0) {
        sb = stage_sb<TT>();
    } else {
        switch (type) {
#define SB_CASE(T_) case T_: sb = stage_sb<T_>(); break;
        QUANT_TYPES(SB_CASE)
#undef SB_CASE
        default: return false;
        }
    }
    rows_issue<R>(w0, w1, split, rb, nv0, nv1, 0, min((size_t)stage_ipc<MV>(sb, cap) * sb, rb), buf, cap);
    return true;
}

/* Staged dispatch (quantized types with int8 x); float types and the exact fallback
 * read global memory directly, one part at a time. */
template <int R, int MV, int TT = SPEC_NONE>
__device__ __forceinline__ void rows_any_s(int type, const uint8_t *w0, const uint8_t *w1, int split, size_t rb, int nv0, int nv1, int ncols,
                                           const float *xf, const int8_t *xq, const float *xd, float *acc, uint8_t *buf, int cap, bool pre = false) {
    if constexpr (TT >= 0) {   /* a kernel specialized for one quant type with int8 x: no switch */
        rows_qs<TT, R, MV>(w0, w1, split, rb, nv0, nv1, ncols, xq, xd, acc, buf, cap, pre);
    } else {
        if (!xq || type_is_float_d(type)) {
            rows_any<R>(type, w0, rb, split < R ? min(nv0, split) : nv0, ncols, xf, xq, xd, acc);
            if (split < R) {
                float t[R];
#pragma unroll
                for (int r = 0; r < R; r++) t[r] = 0.f;
                rows_any<R>(type, w1, rb, min(nv1, R - split), ncols, xf, xq, xd, t);
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (r >= split) acc[r] += t[r - split];
            }
            return;
        }
#define RQS(TT) case TT: rows_qs<TT, R, MV>(w0, w1, split, rb, nv0, nv1, ncols, xq, xd, acc, buf, cap, pre); break;
        switch (type) {
        QUANT_TYPES(RQS)
        default: break;
        }
#undef RQS
    }
}

/* The persistent kernel's int8 x in shared memory: 16 bytes of padding after every 64
 * elements (xs_at), so that the 16-byte x loads of a quarter-warp (4 lanes a superblock,
 * 64 elements a lane, two superblocks: offsets 64c + 256s apart, all in the same 4 banks
 * otherwise) fall in 8 different bank groups. */
__host__ __device__ __forceinline__ int xs_at(int e) { return e + ((e >> 6) << 4); }
__host__ __device__ static inline size_t xs_bytes(size_t n) { return n + 16 * ((n + 63) / 64); }
__device__ __forceinline__ int dp4a_sum(int v) { return __dp4a(v, 0x01010101, 0); }

/* Copy x (int8, n bytes, n % 16 == 0 after padding) and its n/32 scales into shared
 * memory with the threads [t0, t0+nt). pk (the persistent kernel's layout): x at
 * xs_at(e), and per group of 32 a float2 in xd and xds: the scale, and the scale times the
 * sum of the group's values (for the types whose dot subtracts a min or an offset;
 * warp_quant2 wrote them). */
__device__ __forceinline__ void stage_x(const int8_t *xq, const float *xd, int n, int8_t *xs, float *xds, int t, int nt, bool pk = false) {
    const int nv = n / 16;
    if (pk) {   /* plain loads: a cp.async wait here would also wait for the weight rows the warps issued before */
        for (int i = t; i < nv; i += nt) *(int4 *)(xs + xs_at(16 * i)) = __ldcg((const int4 *)(xq + 16 * i));
        for (int i = t; i < n / 32; i += nt) ((float2 *)xds)[i] = __ldcg((const float2 *)xd + i);   /* past L1: other SMs wrote them */
        return;
    }
    for (int i = t; i < nv; i += nt) cp_async16(xs + 16 * i, xq + 16 * i);
    for (int i = t; i < n / 32; i += nt) xds[i] = __ldcg(xd + i);
    cp_async_wait_all();
}
__host__ __device__ static inline int xq_pad(int n) { return (n + 255) / 256 * 256; }   /* staged x bytes: whole 256-element steps */

/* v as int8 in a group of 32 whose largest magnitude is amax (scale amax / 127) */
__device__ __forceinline__ int8_t quant_q8(float v, float amax) {
    const float s = amax / 127.f;
    return (int8_t)max(-127, min(127, amax > 0.f ? __float2int_rn(v / s) : 0));
}
/* Quantize the 32 values of a warp (one per lane) to int8 with one f32 scale. */
__device__ __forceinline__ void warp_quant(float v, int8_t *q, float *d) {
    const float amax = warp_max(fabsf(v));
    q[threadIdx.x % WARP] = quant_q8(v, amax);
    if (threadIdx.x % WARP == 0) *d = amax / 127.f;
}
/* The same, for the persistent kernel: the scale and the scale times the sum of the 32
 * int8 values (its dots' min / offset terms) as one float2. */
__device__ __forceinline__ void warp_quant2(float v, int8_t *q, float2 *dm) {
    const float amax = warp_max(fabsf(v));
    const int8_t b = quant_q8(v, amax);
    q[threadIdx.x % WARP] = b;
    int sum = b;
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (threadIdx.x % WARP == 0) *dm = make_float2(amax / 127.f, amax / 127.f * (float)sum);
}

/* F's down products are summed as fixed point with PK_FX steps a unit: 2^-32 resolution,
 * |sum| < 2^31 (a float atomic's sum would depend on the order its adds arrive in; integer
 * adds give one sum in any order, so a step stays deterministic) */
#define PK_FX 4294967296.f
/* x's float4 i: x itself, or where acc is given x + acc / PK_FX (the residual after F: h2
 * and F's sum). Past L1 (ldcg): other SMs wrote them. */
__device__ __forceinline__ float4 pk_x4(const float *x, const long long *acc, int i) {
    float4 v = __ldcg((const float4 *)x + i);
    if (acc) {
        const longlong2 p = __ldcg((const longlong2 *)acc + 2 * i), q = __ldcg((const longlong2 *)acc + 2 * i + 1);
        v.x += (float)p.x * (1.f / PK_FX); v.y += (float)p.y * (1.f / PK_FX);
        v.z += (float)q.x * (1.f / PK_FX); v.w += (float)q.y * (1.f / PK_FX);
    }
    return v;
}
/* RMSNorm folded into its consumers: every block of a kernel that reads the normed
 * activation (q/k/v, router, gate+up) computes it from the residual x itself (8 KB of x
 * and 8 KB of weights from L2 for 30B-A3B) instead of waiting on a one-block norm kernel
 * and its chain of round trips. Step 1, before the grid dependency wait: stage the norm
 * weights (never written during a step) into xsf. */
__device__ __forceinline__ void norm_stage_w(const float *w, int E, float *xsf) {
    if ((E & 3) == 0 && ((uintptr_t)w & 15) == 0)
        for (int i = threadIdx.x; i < E / 4; i += blockDim.x) cp_async16(xsf + 4 * i, w + 4 * i);
    else
        for (int i = threadIdx.x; i < E; i += blockDim.x) xsf[i] = w[i];
}
/* Step 2, after the wait: xsf = x / rms(x) * w (f32, the same value in every block: same
 * order of operations), and when xs is given its int8 copy with one scale per 32 (as
 * k_rmsnorm + k_quant would give). rows_pending: one more group of copies (weight rows)
 * was committed after step 1's and need not land yet. acc (the persistent kernel's head):
 * x is x + acc / PK_FX, on the float4 path only (that kernel requires n_embd % 256 == 0).
 * Ends with the block synchronized. (The persistent kernel's A and F take norm_xl /
 * norm_xq, below.) */
/* v summed over the block, the same value in every thread: the warps' sums through shared
 * memory, one barrier (the caller synchronizes again before the next call) */
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float red[32];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = blockDim.x / WARP;
    v = warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = 0.f;
#pragma unroll
    for (int j = 0; j < 32; j++)   /* unrolled: the loads in flight together (the adds in order, as before) */
        if (j < nw) t += red[j];
    return t;
}
__device__ __forceinline__ void norm_x(const float *x, int E, float eps, float *xsf, int8_t *xs, float *xds, bool rows_pending = false,
                                      bool pk = false, const long long *acc = nullptr) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = blockDim.x / WARP;
    if (rows_pending) cp_async_wait_but_one();
    else cp_async_wait_all();
    __syncthreads();
    float ss = 0.f;
    if ((E & 3) == 0) {
        for (int i = threadIdx.x; i < E / 4; i += blockDim.x) {
            const float4 v = pk_x4(x, acc, i);   /* past L1: in the persistent kernel other SMs wrote x */
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            float4 *o = (float4 *)xsf + i;
            *o = make_float4(o->x * v.x, o->y * v.y, o->z * v.z, o->w * v.w);
        }
    } else {
        for (int i = threadIdx.x; i < E; i += blockDim.x) { const float v = __ldcg(x + i); ss += v * v; xsf[i] *= v; }
    }
    const float sc = 1.0f / sqrtf(block_sum(ss) / E + eps);
    for (int i = threadIdx.x; i < E; i += blockDim.x) xsf[i] *= sc;
    __syncthreads();
    if (!xs) return;
    if (E % 128 == 0) {   /* 8 lanes a group of 32 (a float4 each): a 3-step max instead of warp_quant's 5, the same values */
        for (int i = threadIdx.x; i < E / 4; i += blockDim.x) {   /* whole warps: E / 4 is a multiple of 32 */
            const float4 v = ((const float4 *)xsf)[i];
            float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
            const char4 q = make_char4(quant_q8(v.x, amax), quant_q8(v.y, amax), quant_q8(v.z, amax), quant_q8(v.w, amax));
            *(char4 *)(xs + (pk ? xs_at(4 * i) : 4 * i)) = q;
            int sum = 0;
            if (pk) {
                sum = (int)q.x + q.y + q.z + q.w;
#pragma unroll
                for (int o = 1; o < 8; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            }
            if ((i & 7) == 0) {
                if (pk) ((float2 *)xds)[i / 8] = make_float2(amax / 127.f, amax / 127.f * (float)sum);
                else xds[i / 8] = amax / 127.f;
            }
        }
    } else {
        for (int g = warp; g < E / 32; g += nw) {   /* a group of 32 never straddles xs_at's padding */
            if (pk) warp_quant2(xsf[g * 32 + lane], xs + xs_at(g * 32), (float2 *)xds + g);
            else warp_quant(xsf[g * 32 + lane], xs + g * 32, xds + g);
        }
    }
    __syncthreads();
}

/* The persistent kernel's RMSNorm into int8 (norm_x's values but for rounding, in fewer
 * block barriers): thread t's float4s i = t, t + blockDim.x, ... of x (norm_stage_w staged
 * w[4i..4i+3] into xsf with the same threads: its own copies, no barrier before them) are
 * quantized as x * w, since 1 / rms scales a group's values and its max alike: 1 / rms goes
 * into the group's scale (xq_finish), so the quantization does not wait for the sum of
 * squares. Needs E % 128 == 0 (whole warps, 8 lanes a group of 32). Writes the group's
 * unscaled step and its int8 sum to xds for xq_finish; returns the thread's sum of squares. */
__device__ __forceinline__ float xq_start(const float *x, const long long *acc, bool shared, int E, const float *xsf, int8_t *xs, float2 *xds,
                                         float *xr) {
    float ss = 0.f;
    for (int i = threadIdx.x; i < E / 4; i += blockDim.x) {
        const float4 v = shared ? ((const float4 *)x)[i] : pk_x4(x, acc, i), w = ((const float4 *)xsf)[i];
        if (xr) ((float4 *)xr)[i] = v;
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        const float4 y = make_float4(v.x * w.x, v.y * w.y, v.z * w.z, v.w * w.w);
        float amax = fmaxf(fmaxf(fabsf(y.x), fabsf(y.y)), fmaxf(fabsf(y.z), fabsf(y.w)));
#pragma unroll
        for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const float iq = amax > 0.f ? 127.f / amax : 0.f;   /* one division a group, not one a value */
        const char4 q = make_char4(__float2int_rn(y.x * iq), __float2int_rn(y.y * iq), __float2int_rn(y.z * iq), __float2int_rn(y.w * iq));
        *(char4 *)(xs + xs_at(4 * i)) = q;
        int sum = (int)q.x + q.y + q.z + q.w;
#pragma unroll
        for (int o = 1; o < 8; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if ((i & 7) == 0) xds[i / 8] = make_float2(amax / 127.f, (float)sum);
    }
    return ss;
}
/* the groups' scales times 1 / rms (each by the thread that wrote it), then the block's barrier before the multiply */
__device__ __forceinline__ void xq_finish(int E, float sc, float2 *xds) {
    for (int i = threadIdx.x; i < E / 4; i += blockDim.x)
        if ((i & 7) == 0) {
            const float2 d = xds[i / 8];
            xds[i / 8] = make_float2(d.x * sc, d.x * sc * d.y);
        }
    __syncthreads();
}
/* A's: the sum of squares over the block's own copy of x (one reduction barrier); x is read
 * from L2 (ldcg: other SMs wrote it) and copied to xr. Returns 1 / rms. */
__device__ __forceinline__ float norm_xl(const float *x, const long long *acc, int E, float eps, const float *xsf, int8_t *xs, float2 *xds, float *xr) {
    const float sc = 1.0f / sqrtf(block_sum(xq_start(x, acc, false, E, xsf, xs, xds, xr)) / E + eps);
    xq_finish(E, sc, xds);
    return sc;
}
/* F's: x (h2) in shared memory, and the sum of squares from the np partials that the phase
 * which wrote it left per block (D's, pk_arrive), staged in shared memory beside it: every
 * warp sums them itself (the same order in every warp of every block), so no reduction
 * barrier at all. (Read from L2 instead, as A could, the 16 warps of 132 blocks queue on
 * the same few lines: A's norm 2.2 -> 3.3 us on the H100, bench/NOTES.md P104.) */
__device__ __forceinline__ float norm_xq(const float *x, const float *ssp, int np, int E, float eps, const float *xsf, int8_t *xs, float2 *xds) {
    const int lane = threadIdx.x % WARP;
    float p = 0.f;
    for (int j = lane; j < np; j += WARP) p += ssp[j];
    xq_start(x, nullptr, true, E, xsf, xs, xds, nullptr);
    const float sc = 1.0f / sqrtf(warp_sum(p) / E + eps);
    xq_finish(E, sc, xds);
    return sc;
}

/* ======================================================================
 * Kernels
 * ==================================================================== */
__device__ __forceinline__ unsigned long long argmax_key(float v, int idx) {
    uint32_t u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)u << 32) | (unsigned long long)(~(uint32_t)idx);
}


struct MVSeg {
    const uint8_t *w;
    float *y;
    size_t rb;
    int type, ncols, nrows, accum, blk0;
};
struct MVArgs {
    MVSeg s[3];
    int nseg;
    const float *xf;
    const int8_t *xq;
    const float *xd;
    unsigned long long *amax;
    int pf;   /* prefetch the block's weight rows into L2 before waiting on the previous kernel */
    const float *nw;   /* k_mmv2: when set, xf is the residual and each block RMS-normalizes it with these weights */
    float eps;
};

/* Epilogues shared by the direct and the staged kernels. */
/* Matvec: reduce each row's lane partials and store (or add) it; track the argmax. */
template <int R>
__device__ __forceinline__ void mmv_store(const MVSeg &s, const MVArgs &a, float *acc, int row0, int nvalid) {
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = warp_sum(acc[r]);
    if (threadIdx.x % WARP) return;
#pragma unroll
    for (int r = 0; r < R; r++) {
        if (r >= nvalid) break;
        float v = acc[r];
        if (s.accum) v += s.y[row0 + r];
        s.y[row0 + r] = v;
        if (a.amax && v == v) atomicMax(a.amax, argmax_key(v, row0 + r));
    }
}
/* Gate+up of a block of 32 rows (each warp 4): SwiGLU, h in f32, and when hq the 32
 * outputs quantized to int8 as one group for the down projection. Every thread calls it. */
__device__ __forceinline__ void swiglu_store(const float *ag, const float *au, int nvalid, int k, int F, int r0, float *h, int8_t *hq, float *hd,
                                             int Fpad) {
    __shared__ float hs[32];
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const float g = warp_sum(ag[r]), u = warp_sum(au[r]);
        if (lane == 0) {
            const float v = r < nvalid ? g / (1.0f + expf(-g)) * u : 0.f;
            hs[warp * 4 + r] = v;
            if (r < nvalid) h[(size_t)k * F + r0 + r] = v;
        }
    }
    if (!hq) return;
    __syncthreads();
    if (warp == 0) warp_quant(hs[lane], hq + (size_t)k * Fpad + blockIdx.x * 32, hd + (size_t)k * (Fpad / 32) + blockIdx.x);
}
/* Down: sum the warps' (expert slots') partials in a fixed order, add to the residual. */
template <int RD>
__device__ __forceinline__ void down_store(const float *acc, int r0, int nvalid, float *x) {
    __shared__ float part[NTHR / WARP][RD];
    const int warp = threadIdx.x / WARP;
#pragma unroll
    for (int r = 0; r < RD; r++) {
        const float v = warp_sum(acc[r]);
        if (threadIdx.x % WARP == 0) part[warp][r] = v;
    }
    __syncthreads();
    if (threadIdx.x < nvalid) {
        float s = 0.f;
        for (int w = 0; w < NTHR / WARP; w++) s += part[w][threadIdx.x];
        x[r0 + threadIdx.x] += s;
    }
}

/* y (+)= W x for up to 3 weights in one launch (q, k, v). Reads every weight byte
 * once (warp per R rows, lanes on consecutive bytes) and x from L1; R rows per
 * warp share each activation load and keep R weight loads in flight. */
template <int R>
__global__ void __launch_bounds__(NTHR) k_mmv(const MVArgs a) {
    pdl_enter();
    int si = 0;
    while (si + 1 < a.nseg && (int)blockIdx.x >= a.s[si + 1].blk0) si++;
    const MVSeg &s = a.s[si];
    const int warp = threadIdx.x / WARP;
    const int row0 = (((int)blockIdx.x - s.blk0) * (NTHR / WARP) + warp) * R;
    if (row0 >= s.nrows) return;
    const int nvalid = min(R, s.nrows - row0);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.f;
    rows_any<R>(s.type, s.w + (size_t)row0 * s.rb, s.rb, nvalid, s.ncols, a.xf, a.xq, a.xd, acc);
    mmv_store<R>(s, a, acc, row0, nvalid);
}

/* A decode step's first kernel: its token and position from the host's command in its
 * slot (mapped memory, read when the step runs), or (token < 0) the argmax of the step
 * before it, one position on: a queued greedy step needs no host round trip. */
__global__ void k_feed(const int *cmd, int *io, const unsigned long long *amax) {
    const int slot = io[2] & 1;
    int tok = ((const volatile int *)cmd)[2 * slot], pos = ((const volatile int *)cmd)[2 * slot + 1];
    if (tok < 0) {
        const unsigned long long k = *amax;
        tok = k ? (int)~(uint32_t)(k & 0xffffffffull) : 0;   /* all-NaN logits: the host reports the step before */
        pos = io[1] + 1;
    }
    io[0] = tok;
    io[1] = pos;
}
/* A decode step's last kernel: its argmax key to the host (mapped memory, per slot), the step counted. */
__global__ void k_publish(const unsigned long long *amax, unsigned long long *out, int *io) {
    const int step = io[2];
    ((volatile unsigned long long *)out)[step & 1] = *amax;
    io[2] = step + 1;
}

/* Embedding rows for ntok tokens (ids in device memory): reads one row each. Also
 * resets the argmax slot for this step. */
__global__ void k_embed(const uint8_t *__restrict__ emb, int type, int E, size_t rb, const int *__restrict__ tok, float *__restrict__ x,
                        unsigned long long *amax) {
    pdl_enter();
    const int i = blockIdx.y;
    const int e0 = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (amax && i == 0 && e0 == 0) *amax = 0ull;
    if (e0 >= E) return;
    float y[8];
    const int n = min(8, E - e0);
    dq8(type, emb + (size_t)tok[i] * rb, e0, n, y);
    for (int j = 0; j < n; j++) x[(size_t)i * E + e0 + j] = y[j];
}

/* RMSNorm of one row per block (ntok blocks): reads x and w once, writes f32,
 * f16 and/or int8+scale copies for the consumers (matvec or GEMM). */
__global__ void __launch_bounds__(NTHR) k_rmsnorm(const float *__restrict__ x, const float *__restrict__ w, int E, float eps, float *out,
                                                  __half *out16, int8_t *oq, float *od) {
    pdl_enter();
    extern __shared__ float sm[];
    __shared__ double red[NTHR / WARP];
    const int i = blockIdx.x;
    const float *xr = x + (size_t)i * E;
    double ss = 0;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        const float v = xr[e];
        sm[e] = v;
        ss += (double)v * v;
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (threadIdx.x % WARP == 0) red[threadIdx.x / WARP] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int j = 0; j < (int)blockDim.x / WARP; j++) t += red[j];
        red[0] = t;
    }
    __syncthreads();
    const float scale = 1.0f / sqrtf((float)(red[0] / E) + eps);
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        const float v = sm[e] * scale * w[e];
        sm[e] = v;
        if (out) out[(size_t)i * E + e] = v;
        if (out16) out16[(size_t)i * E + e] = __float2half(v);
    }
    if (!oq) return;
    __syncthreads();
    const int ng = E / 32;
    for (int g = threadIdx.x / WARP; g < ng; g += blockDim.x / WARP)
        warp_quant(sm[g * 32 + threadIdx.x % WARP], oq + (size_t)i * E + g * 32, od + (size_t)i * ng + g);
}

/* int8 quantization of rows of n floats (n % 32 == 0): warp per 32-group. */
__global__ void k_quant(const float *__restrict__ x, int ngroups, int8_t *q, float *d) {
    const int g = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (g >= ngroups) return;
    warp_quant(x[(size_t)g * 32 + threadIdx.x % WARP], q + (size_t)g * 32, d + g);
}

/* Rotate pair t (elements t and t + D/2, NEOX) of a head at position pos: the angle is
 * pos * scale^t built by repeated multiplication, as ggml does. cosf and sinf as the CPU
 * reference; ONE_CALL: sincosf, one range reduction in the code (the persistent kernel
 * must stay small for the instruction cache: 312 against 319 tok/s with two). */
template <bool ONE_CALL = false>
__device__ __forceinline__ void rope_pair(float y0, float y1, int pos, int t, float theta_scale, float &r0, float &r1) {
    float theta = (float)pos;
    for (int i = 0; i < t; i++) theta *= theta_scale;
    float c, s;
    if (ONE_CALL) sincosf(theta, &s, &c);
    else { c = cosf(theta); s = sinf(theta); }
    r0 = y0 * c - y1 * s;
    r1 = y0 * s + y1 * c;
}

/* Per-head RMSNorm of q and k, NEOX RoPE (pairs i, i+D/2), k and v stored as f16
 * in the cache at their positions. One block per head vector, thread per pair. The
 * angle is built as pos * scale^i by repeated multiplication, as ggml does. */
__global__ void k_qk_rope(float *qkv, int stride, int nh, int nkv, int D, const float *__restrict__ qn, const float *__restrict__ kn, float eps,
                          const int *__restrict__ pos_dev, float theta_scale, __half *kc, __half *vc, int kvdim) {
    pdl_enter();
    __shared__ float red[8];
    const int hh = blockIdx.x, i = blockIdx.y, t = threadIdx.x, half = D / 2;
    const int pos = pos_dev[0] + i;
    float *row = qkv + (size_t)i * stride;
    if (hh >= nh + nkv) {   /* v head: copy to the cache */
        const int kvh = hh - nh - nkv;
        const float *v = row + nh * D + kvdim + kvh * D;
        __half *dst = vc + (size_t)pos * kvdim + kvh * D;
        if (t >= half) return;
        dst[t] = __float2half(v[t]);
        dst[t + half] = __float2half(v[t + half]);
        return;
    }
    const bool isq = hh < nh, act = t < half;
    float *v = isq ? row + hh * D : row + nh * D + (hh - nh) * D;
    const float *w = isq ? qn : kn;
    float x0 = act ? v[t] : 0.f, x1 = act ? v[t + half] : 0.f;
    float ss = x0 * x0 + x1 * x1;
    ss = warp_sum(ss);
    if (t % WARP == 0) red[t / WARP] = ss;
    __syncthreads();
    float tot = 0.f;
    for (int j = 0; j < (int)blockDim.x / WARP; j++) tot += red[j];
    if (!act) return;
    const float sc = 1.0f / sqrtf(tot / D + eps);
    float y0, y1;
    rope_pair(x0 * sc * w[t], x1 * sc * w[t + half], pos, t, theta_scale, y0, y1);
    if (isq) {
        v[t] = y0;
        v[t + half] = y1;
    } else {
        __half *dst = kc + (size_t)pos * kvdim + (hh - nh) * D;
        dst[t] = __float2half(y0);
        dst[t + half] = __float2half(y1);
    }
}

/* Attention, split over position chunks (flash-decoding). Block = (kv head, group
 * of up to 8 query heads sharing it, chunk, query token): K and V of the chunk are
 * read once for all heads of the group; 4 warps split the positions, f32 online
 * softmax, partial (max, sum, acc[D]) per head and chunk. */
/* The chunk size used: at least ch, and large enough that a query at pos0 spans at most
 * ~64 chunks, so that the combine stays short at depth while shallow contexts still split
 * into many blocks (decode's graph has a fixed grid of n_ctx / ATT_CH chunks; those past
 * the query exit at once). k_attn and k_attn_combine must agree. */
__device__ __forceinline__ int att_chunk(int ch, int pos0) { return max(ch, ((pos0 + 64) / 64 + 15) & ~15); }

/* N halves of a K or V row as floats, zeros when !ok (no load), read past L1: for N = 2, 4
 * or 8 one 4-, 8- or 16-byte load (the row is N-aligned), else one load a half */
template <int N>
__device__ __forceinline__ void ld_halves(const __half *p, bool ok, float *f) {
    if constexpr (N == 2 || N == 4 || N == 8) {
        uint32_t w[N / 2];
        if constexpr (N == 8) {
            const uint4 v = ok ? __ldcg((const uint4 *)p) : make_uint4(0, 0, 0, 0);
            w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
        } else if constexpr (N == 4) {
            const uint2 v = ok ? __ldcg((const uint2 *)p) : make_uint2(0, 0);
            w[0] = v.x; w[1] = v.y;
        } else {
            w[0] = ok ? __ldcg((const unsigned *)p) : 0u;
        }
#pragma unroll
        for (int i = 0; i < N / 2; i++) {
            const float2 h = __half22float2(*(const __half2 *)&w[i]);
            f[2 * i] = h.x;
            f[2 * i + 1] = h.y;
        }
    } else {
#pragma unroll
        for (int d = 0; d < N; d++) f[d] = ok ? __half2float(__ushort_as_half(__ldcg((const unsigned short *)p + d))) : 0.f;
    }
}
/* One attention work item of k_attn (the kernel graph's decode): query heads h0..
 * h0+nhb-1 (q: their rows, already rotated, head after head) against positions [t0, t1)
 * of one KV head, by the block's 4 warps; writes each head's partial (acc[D], max, sum)
 * at pp + j * pstride. sm: (8 + 4 * D) * HB floats of shared scratch. */
template <int DPL, int HB>
__device__ __forceinline__ void attn_part(const float *q0, float scale, int nhb, const __half *kc, const __half *vc, int kvdim, int kvh, int t0, int t1,
                                          float *sm, float *pp, size_t pstride) {
    const int D = DPL * WARP, lt = threadIdx.x % 128, warp = lt / WARP, lane = lt % WARP;
    float q[HB][DPL], acc[HB][DPL], m[HB], l[HB];
#pragma unroll
    for (int j = 0; j < HB; j++) {
        m[j] = -INFINITY;
        l[j] = 0.f;
#pragma unroll
        for (int d = 0; d < DPL; d++) {
            q[j][d] = j < nhb ? __ldcg(q0 + j * D + lane * DPL + d) * scale : 0.f;
            acc[j][d] = 0.f;
        }
    }
    /* ATT_U positions per warp and step: their K/V loads are in flight together and the
     * ATT_U x HB dot products reduce with independent shuffles, so a step costs about
     * one round trip instead of HB dependent reductions per position (heads past nhb
     * have q = 0 and are never written out) */
    for (int tb = t0 + warp; tb < t1; tb += 4 * ATT_U) {
        float kf[ATT_U][DPL], vf[ATT_U][DPL], s[ATT_U][HB];
#pragma unroll
        for (int u = 0; u < ATT_U; u++) {
            const int t = tb + 4 * u;
            ld_halves<DPL>(kc + (size_t)t * kvdim + kvh * D + lane * DPL, t < t1, kf[u]);
            ld_halves<DPL>(vc + (size_t)t * kvdim + kvh * D + lane * DPL, t < t1, vf[u]);
        }
#pragma unroll
        for (int u = 0; u < ATT_U; u++)
#pragma unroll
            for (int j = 0; j < HB; j++) {
                float a = 0.f;
#pragma unroll
                for (int d = 0; d < DPL; d++) a = fmaf(q[j][d], kf[u][d], a);
                s[u][j] = a;
            }
#pragma unroll
        for (int u = 0; u < ATT_U; u++)
#pragma unroll
            for (int j = 0; j < HB; j++) s[u][j] = tb + 4 * u < t1 ? warp_sum(s[u][j]) : -INFINITY;
#pragma unroll
        for (int j = 0; j < HB; j++) {
            float mn = m[j];
#pragma unroll
            for (int u = 0; u < ATT_U; u++) mn = fmaxf(mn, s[u][j]);   /* finite: position tb is valid */
            const float corr = expf(m[j] - mn);
            float ps = 0.f;
#pragma unroll
            for (int d = 0; d < DPL; d++) acc[j][d] *= corr;
#pragma unroll
            for (int u = 0; u < ATT_U; u++) {
                const float p = expf(s[u][j] - mn);
                ps += p;
#pragma unroll
                for (int d = 0; d < DPL; d++) acc[j][d] = fmaf(p, vf[u][d], acc[j][d]);
            }
            l[j] = l[j] * corr + ps;
            m[j] = mn;
        }
    }
    /* merge the 4 warps: sm = [4][HB] max, [4][HB] sum, [4][HB][D] acc */
    float *sm_m = sm, *sm_l = sm + 4 * HB, *sm_a = sm + 8 * HB;
#pragma unroll
    for (int j = 0; j < HB; j++) {
        if (lane == 0) { sm_m[warp * HB + j] = m[j]; sm_l[warp * HB + j] = l[j]; }
#pragma unroll
        for (int d = 0; d < DPL; d++) sm_a[(warp * HB + j) * D + lane * DPL + d] = acc[j][d];
    }
    __syncthreads();
    for (int idx = lt; idx < nhb * D; idx += 128) {
        const int j = idx / D, d = idx % D;
        float M = -INFINITY;
        for (int w = 0; w < 4; w++) M = fmaxf(M, sm_m[w * HB + j]);
        float a = 0.f, L = 0.f;
        for (int w = 0; w < 4; w++) {
            const float mw = sm_m[w * HB + j];
            const float f = mw == -INFINITY ? 0.f : expf(mw - M);
            a += sm_a[(w * HB + j) * D + d] * f;
            L += sm_l[w * HB + j] * f;
        }
        float *o = pp + (size_t)j * pstride;
        o[d] = a;
        if (d == 0) { o[D] = M; o[D + 1] = L; }
    }
    __syncthreads();   /* sm is free for the next item */
}

template <int DPL>
__global__ void __launch_bounds__(128) k_attn(const float *__restrict__ qkv, int stride, int nh, int nkv, int D, const __half *__restrict__ kc,
                                              const __half *__restrict__ vc, int kvdim, const int *__restrict__ pos_dev, int ch, int nch,
                                              float scale, float *__restrict__ part) {
    extern __shared__ float sm[];
    const int G = nh / nkv, nhg = (G + ATT_HB - 1) / ATT_HB;
    const int kvh = blockIdx.x / nhg, hg = blockIdx.x % nhg, c = blockIdx.y, i = blockIdx.z;
    /* pos_dev is set before the step's first kernel; the rows of positions before the
     * first query are from earlier steps: prefetched into L2 while k_qk_rope runs */
    const int pos = pos_dev[0] + i;
    ch = att_chunk(ch, pos_dev[0]);
    const int t0 = c * ch;
    if (t0 < pos_dev[0]) {
        const int tp = min(t0 + ch, pos_dev[0]);
        for (int t = t0 + threadIdx.x / 4; t < tp; t += blockDim.x / 4) {
            const __half *r = (threadIdx.x & 2 ? vc : kc) + (size_t)t * kvdim + kvh * D;
            l2_prefetch(r, (size_t)D * sizeof(__half), threadIdx.x & 1, 2);
        }
    }
    pdl_enter();
    if (t0 > pos) return;
    const int h0 = kvh * G + hg * ATT_HB;
    attn_part<DPL, ATT_HB>(qkv + (size_t)i * stride + (size_t)h0 * D, scale, min(ATT_HB, G - hg * ATT_HB), kc, vc, kvdim, kvh, t0, min(t0 + ch, pos + 1), sm,
                   part + (((size_t)i * nh + h0) * nch + c) * (D + 2), (size_t)nch * (D + 2));
}

/* Element d of one head's output from the partials (acc[D], max, sum) of its nv chunks,
 * pp[c * (D + 2)], read past L1 (the persistent kernel's other SMs). One pass, AM_PRE
 * chunks' loads in flight at once, the running max and sums rescaled when a later group
 * raises the max: a round trip per AM_PRE chunks, where separate max and sum passes cost
 * two (deep contexts have up to 64 chunks). Up to AM_PRE chunks the arithmetic is one max
 * and one sum in chunk order. */
#define AM_PRE 8
/* the merge's running max M and sum L, and element d's sum (scaled by exp(-M)); PRE chunks' loads at once */
template <int PRE = AM_PRE>
__device__ __forceinline__ float attn_merge_acc(const float *pp, int nv, int D, int d, float &M, float &L) {
    float acc = 0.f;
    M = -INFINITY;
    L = 0.f;
    for (int c0 = 0; c0 < nv; c0 += PRE) {
        float m[PRE], v[PRE], l[PRE];
#pragma unroll
        for (int u = 0; u < PRE; u++) {
            const bool ok = c0 + u < nv;
            const float *q = pp + (c0 + u) * (D + 2);
            m[u] = ok ? __ldcg(q + D) : -INFINITY;
            v[u] = ok ? __ldcg(q + d) : 0.f;
            l[u] = ok ? __ldcg(q + D + 1) : 0.f;
        }
        float Mn = M;
#pragma unroll
        for (int u = 0; u < PRE; u++) Mn = fmaxf(Mn, m[u]);   /* finite: chunk c0 holds a position */
        const float corr = M == -INFINITY ? 0.f : expf(M - Mn);
        acc *= corr;
        L *= corr;
#pragma unroll
        for (int u = 0; u < PRE; u++) {
            const float f = expf(m[u] - Mn);
            acc += v[u] * f;
            L += l[u] * f;
        }
        M = Mn;
    }
    return acc;
}
__device__ __forceinline__ float attn_merge(const float *pp, int nv, int D, int d) {
    float M, L;
    const float acc = attn_merge_acc(pp, nv, D, d, M, L);
    return acc / L;
}

/* Merge the chunks of each head: reads nch*(D+2) floats per head, writes the head's
 * output as f32, f16 (GEMM input) and/or int8 (matvec input). Block per (head, token). */
__global__ void k_attn_combine(const float *__restrict__ part, int nh, int D, int ch, int nch, const int *__restrict__ pos_dev, float *out,
                               __half *out16, int8_t *oq, float *od) {
    pdl_enter();
    const int h = blockIdx.x, i = blockIdx.y, d = threadIdx.x;
    const int pos = pos_dev[0] + i;
    ch = att_chunk(ch, pos_dev[0]);
    const int nv = min(nch, pos / ch + 1);
    const float v = attn_merge(part + ((size_t)i * nh + h) * nch * (D + 2), nv, D, d);
    const size_t o = (size_t)i * nh * D + (size_t)h * D + d;
    if (out) out[o] = v;
    if (out16) out16[o] = __float2half(v);
    if (oq) warp_quant(v, oq + (o & ~(size_t)31), od + o / 32);
}

/* Softmax over the ne values in sp, in place, by one warp (the router's probabilities). */
__device__ __forceinline__ void softmax_warp(float *sp, int ne) {
    const int lane = threadIdx.x % WARP;
    float mx = -INFINITY;
    for (int e = lane; e < ne; e += WARP) mx = fmaxf(mx, sp[e]);
    mx = warp_max(mx);
    float sum = 0.f;
    for (int e = lane; e < ne; e += WARP) { const float p = expf(sp[e] - mx); sp[e] = p; sum += p; }
    sum = warp_sum(sum);
    for (int e = lane; e < ne; e += WARP) sp[e] /= sum;
}

/* Router tail, one warp: softmax over the ne logits in sp (shared, overwritten), top-k
 * (ties to the lower id), renormalized. rec / recp (optional) get this router's
 * own choice and its probabilities (before renormalization). When *force_on, the experts
 * used are force[k] instead (--parity replays the CPU's choice so that a near-tie flip
 * does not spill into every later comparison), weighted by this router's probabilities. */
__device__ __forceinline__ void router_topk_sp(float *sp, int ne, int K, int *sel, float *selw, int *rec, float *recp, const int *__restrict__ force,
                                               const int *__restrict__ force_on) {
    const int lane = threadIdx.x % WARP;
    softmax_warp(sp, ne);
    __syncwarp();
    float wsum = 0.f;
    for (int k = 0; k < K; k++) {
        float bv = -1.f;
        int bi = 0x7fffffff;
        for (int e = lane; e < ne; e += WARP) {
            const float v = sp[e];
            if (!signbit(v) && v > bv) { bv = v; bi = e; }   /* a set sign bit: taken */
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        if (bi >= ne) { bi = k % ne; bv = 0.f; }   /* NaN logits: no candidate; keep the id in range (the expert kernels index with it) */
        __syncwarp();
        if (lane == 0) {
            sel[k] = bi;
            selw[k] = bv;
            if (rec) rec[k] = bi;
            if (recp) recp[k] = bv;
            sp[bi] = -bv;   /* taken: the sign bit marks it, and keeps p exactly for a forced choice */
        }
        __syncwarp();
        wsum += bv;
    }
    if (force && *force_on) {
        wsum = 0.f;
        for (int k = 0; k < K; k++) {
            const int e = force[k];
            const float p = fabsf(sp[e]);
            wsum += p;
            if (lane == 0) { sel[k] = e; selw[k] = p; }
        }
        __syncwarp();
    }
    for (int k = lane; k < K; k += WARP) selw[k] /= wsum;
}
/* The same, from logits in global memory, read past L1 (ld.cg): in k_router other blocks
 * of the same grid wrote them; sp = ne floats of shared scratch. */
__device__ __forceinline__ void router_topk_warp(const float *lg, int ne, int K, float *sp, int *sel, float *selw, int *rec, float *recp,
                                                 const int *__restrict__ force, const int *__restrict__ force_on) {
    for (int e = threadIdx.x % WARP; e < ne; e += WARP) sp[e] = __ldcg(lg + e);
    __syncwarp();
    router_topk_sp(sp, ne, K, sel, selw, rec, recp, force, force_on);
}

/* Prefill router tail: one warp per token over logits a GEMM wrote ([n][ne]). */
__global__ void k_topk(const float *__restrict__ logits, int ne, int K, int *sel, float *selw, int *rec, float *recp,
                       const int *__restrict__ force, int fstride, const int *__restrict__ force_on) {
    pdl_enter();
    extern __shared__ float sp[];
    const size_t i = blockIdx.x;
    router_topk_warp(logits + i * ne, ne, K, sp, sel + i * K, selw + i * K, rec ? rec + i * K : nullptr, recp ? recp + i * K : nullptr,
                     force ? force + i * fstride : nullptr, force_on);
}

/* Decode router in one kernel: logits = W x (F32 [ne][E]), softmax, top-k and
 * renormalization. Moves ne*E*4 bytes (1 MB for 30B-A3B) once: a warp per expert row,
 * each lane with 8 16-byte loads in flight, 4 rows a block so 32 blocks share the read.
 * Each block publishes its logits; the last one to finish (a counter, which it resets
 * for the next launch) runs the top-k, so no second launch waits on the first.
 * With nw, x is the residual and each block RMS-normalizes it first (norm_x).
 * Dynamic shared memory: router_smem. */
#define RT_WARPS 4
static size_t router_smem(int ne, int E, bool norm) { return ((size_t)(ne + 3) / 4 * 4 + (norm ? (size_t)E : 0)) * sizeof(float); }
__global__ void __launch_bounds__(RT_WARPS * WARP) k_router(const float *__restrict__ W, const float *__restrict__ x, int E, int ne, int K,
                                                            float *logits, unsigned *done, int *sel, float *selw, int *rec, float *recp,
                                                            const int *__restrict__ force, const int *__restrict__ force_on, int pf,
                                                            const float *__restrict__ nw, float eps) {
    extern __shared__ __align__(16) float sp[];
    __shared__ bool last;
    float *xsf = sp + (ne + 3) / 4 * 4;   /* normed x (nw only) */
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int r0 = blockIdx.x * RT_WARPS, row = r0 + warp;
    if (pf) l2_prefetch(W + (size_t)r0 * E, (size_t)min(RT_WARPS, ne - r0) * E * sizeof(float), threadIdx.x, blockDim.x);
    if (nw) norm_stage_w(nw, E, xsf);
    pdl_enter();
    if (nw) {
        norm_x(x, E, eps, xsf, nullptr, nullptr);
        x = xsf;
    }
    if (row < ne) {
        const float *w = W + (size_t)row * E;
        float s = 0.f;
        int i = 0;
        if ((E & 3) == 0) {
            const float4 *w4 = (const float4 *)w, *x4 = (const float4 *)x;
            const int n4 = E / 4;
            for (i = lane; i + 7 * WARP < n4; i += 8 * WARP) {
                float4 a[8], b[8];
#pragma unroll
                for (int j = 0; j < 8; j++) { a[j] = __ldg(w4 + i + j * WARP); b[j] = x4[i + j * WARP]; }
#pragma unroll
                for (int j = 0; j < 8; j++) s += a[j].x * b[j].x + a[j].y * b[j].y + a[j].z * b[j].z + a[j].w * b[j].w;
            }
            for (; i < n4; i += WARP) {
                const float4 a = __ldg(w4 + i), b = x4[i];
                s += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
            }
        } else {
            for (i = lane; i < E; i += WARP) s = fmaf(__ldg(w + i), x[i], s);
        }
        s = warp_sum(s);
        if (lane == 0) logits[row] = s;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(done, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last || warp != 0) return;
    __threadfence();
    if (lane == 0) *done = 0u;
    router_topk_warp(logits, ne, K, sp, sel, selw, rec, recp, force, force_on);
}

/* gate and up of all k selected experts in one launch, SwiGLU fused: block = 32
 * rows of one expert (8 warps x 4 rows, gate and up each), so each expert row is
 * read once and the 32 outputs are quantized to int8 for the down projection
 * without another pass. Grid (F/32, k). */
__global__ void __launch_bounds__(NTHR) k_gateup(const uint8_t *__restrict__ wg, int tg, size_t rbg, const uint8_t *__restrict__ wu, int tu,
                                                 size_t rbu, int E, int F, const int *__restrict__ sel, const float *__restrict__ xf,
                                                 const int8_t *__restrict__ xq, const float *__restrict__ xd, float *__restrict__ h,
                                                 int8_t *__restrict__ hq, float *__restrict__ hd, int Fpad) {
    pdl_enter();
    const int k = blockIdx.y, e = sel[k];
    const int warp = threadIdx.x / WARP;
    const int r0 = blockIdx.x * 32 + warp * 4;
    const int nvalid = min(4, F - r0);
    float ag[4] = {0.f, 0.f, 0.f, 0.f}, au[4] = {0.f, 0.f, 0.f, 0.f};
    if (nvalid > 0) {
        rows_any<4>(tg, wg + ((size_t)e * F + r0) * rbg, rbg, nvalid, E, xf, xq, xd, ag);
        rows_any<4>(tu, wu + ((size_t)e * F + r0) * rbu, rbu, nvalid, E, xf, xq, xd, au);
    }
    swiglu_store(ag, au, nvalid, k, F, r0, h, hq, hd, Fpad);
}

/* down of all k experts, weighted by the routing weights, summed in a fixed order
 * and added to the residual: block = 8 output rows, warp per expert slot, 8 rows
 * per warp so 8 weight loads are in flight per step; no atomics (deterministic). */
__global__ void __launch_bounds__(NTHR) k_down(const uint8_t *__restrict__ wd, int td, size_t rbd, int F, int E, const int *__restrict__ sel,
                                               const float *__restrict__ selw, int K, const float *__restrict__ hf, const int8_t *__restrict__ hq,
                                               const float *__restrict__ hd, int Fpad, float *__restrict__ x) {
    pdl_enter();
    const int warp = threadIdx.x / WARP;
    const int r0 = blockIdx.x * 8, nvalid = min(8, E - r0);
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int k = warp; k < K; k += NTHR / WARP) {
        const int e = sel[k];
        const float wk = selw[k];
        float t[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        rows_any<8>(td, wd + ((size_t)e * E + r0) * rbd, rbd, nvalid, F, hf + (size_t)k * F, hq ? hq + (size_t)k * Fpad : nullptr,
                    hd ? hd + (size_t)k * (Fpad / 32) : nullptr, t);
#pragma unroll
        for (int r = 0; r < 8; r++) acc[r] += wk * t[r];
    }
    down_store<8>(acc, r0, nvalid, x);
}


/* Staged matvec: y (+)= W x for up to 3 weights in one launch. The block first
 * copies x (int8 + scales, a few KB, from L2) into shared memory, or with a.nw computes
 * the RMS-normed x there itself (norm_x); each of its 4 warps then stages 2 weight rows
 * with 16-byte streaming loads (all in flight at once) and runs dp4a out of shared
 * memory. Every weight byte is read from DRAM once. */
#define MV2_WARPS 4
#define MV2_R 2
#ifndef MV2_MINB
#define MV2_MINB 5   /* ~100 registers a thread: 5 blocks an SM, just enough for the 640 q/k/v blocks in one wave (measured: 5 > 4, 6 > 8 > 12) */
#endif
template <int TT>
__global__ void __launch_bounds__(MV2_WARPS * WARP, MV2_MINB) k_mmv2(const MVArgs a, int cap, int xn) {
    extern __shared__ __align__(16) uint8_t sbuf[];
    int si = 0;
    while (si + 1 < a.nseg && (int)blockIdx.x >= a.s[si + 1].blk0) si++;
    const MVSeg &s = a.s[si];
    const int xpad = xq_pad(xn);
    int8_t *xs = (int8_t *)sbuf;
    float *xds = (float *)(sbuf + xpad);
    float *xsf = (float *)(sbuf + xpad + xpad / 8);   /* normed f32 x (a.nw only) */
    if (a.pf && !(a.xq && !type_is_float_d(s.type))) {   /* rows the staged path will not copy early (below): into L2 meanwhile */
        const int br0 = ((int)blockIdx.x - s.blk0) * MV2_WARPS * MV2_R;
        if (br0 < s.nrows) l2_prefetch(s.w + (size_t)br0 * s.rb, (size_t)min(MV2_WARPS * MV2_R, s.nrows - br0) * s.rb, threadIdx.x, blockDim.x);
    }
    if (a.nw) norm_stage_w(a.nw, xn, xsf);
    cp_async_commit();
    /* the warp's weight rows are constants: their copies go out before the wait too */
    const int warp = threadIdx.x / WARP;
    uint8_t *wbuf = sbuf + xpad + xpad / 8 + (a.nw ? 4 * xpad : 0) + warp * MV2_R * cap;
    const int row0 = (((int)blockIdx.x - s.blk0) * MV2_WARPS + warp) * MV2_R;
    const int nvalid = min(MV2_R, s.nrows - row0);
    const bool pre = a.xq && row0 < s.nrows && rows_pre_issue<MV2_R, 5, TT>(s.type, s.w + (size_t)row0 * s.rb, nullptr, MV2_R, s.rb, nvalid, 0, wbuf, cap);
    cp_async_commit();
    pdl_enter();
    if (a.nw) norm_x(a.xf, xn, a.eps, xsf, a.xq ? xs : nullptr, xds, true);
    else if (a.xq) stage_x(a.xq, a.xd, xpad, xs, xds, threadIdx.x, blockDim.x);
    __syncthreads();
    if (row0 >= s.nrows) return;
    float acc[MV2_R];
#pragma unroll
    for (int r = 0; r < MV2_R; r++) acc[r] = 0.f;
    rows_any_s<MV2_R, 5, TT>(s.type, s.w + (size_t)row0 * s.rb, nullptr, MV2_R, s.rb, nvalid, 0, s.ncols, a.nw ? xsf : a.xf, a.xq ? xs : nullptr, xds, acc,
                         wbuf, cap, pre);
    mmv_store<MV2_R>(s, a, acc, row0, nvalid);
}
static size_t mmv2_smem(int xn, int cap, bool norm = false) {
    return (size_t)xq_pad(xn) + xq_pad(xn) / 8 + (norm ? 4 * (size_t)xq_pad(xn) : 0) + (size_t)MV2_WARPS * MV2_R * cap;
}

/* Staged gate+up+SwiGLU for all k experts: block = 32 rows of one expert, 8 warps x
 * 4 rows; x staged once per block; each warp stages its 4 gate and 4 up rows in one
 * go (8 rows of loads in flight), so one DRAM round trip per warp. The 32 outputs are
 * quantized to int8 in the block for the down projection. Grid (F/32, k). MV = 3:
 * rows up to 1.5 KB at once (2048-wide K-quants); MV = 5: gate and up in two passes. */
template <int MV, int TT = SPEC_NONE>
__global__ void __launch_bounds__(NTHR) k_gateup2(const uint8_t *__restrict__ wg, int tg, size_t rbg, const uint8_t *__restrict__ wu, int tu,
                                                  size_t rbu, int E, int F, const int *__restrict__ sel, const float *__restrict__ xf,
                                                  const int8_t *__restrict__ xq, const float *__restrict__ xd, float *__restrict__ h,
                                                  int8_t *__restrict__ hq, float *__restrict__ hd, int Fpad, int cap, const float *__restrict__ nw,
                                                  float eps) {
    extern __shared__ __align__(16) uint8_t sbuf[];
    const int xpad = xq_pad(E);
    int8_t *xs = (int8_t *)sbuf;
    float *xds = (float *)(sbuf + xpad);
    float *xsf = (float *)(sbuf + xpad + xpad / 8);   /* normed f32 x (nw only) */
    if (nw) norm_stage_w(nw, E, xsf);
    cp_async_commit();
    pdl_enter();
    const int k = blockIdx.y, e = sel[k];
    const int warp = threadIdx.x / WARP;
    uint8_t *buf = sbuf + xpad + xpad / 8 + (nw ? 4 * xpad : 0) + warp * 8 * cap;
    const int r0 = blockIdx.x * 32 + warp * 4;
    const int nvalid = min(4, F - r0);
    const uint8_t *g0 = wg + ((size_t)e * F + r0) * rbg, *u0 = wu + ((size_t)e * F + r0) * rbu;
    /* the expert's rows go out as soon as its id is known, before the norm and x staging */
    const bool fused = MV == 3 && tg == tu && rbg == rbu;
    const bool pre = xq && fused && nvalid > 0 && rows_pre_issue<8, MV, TT>(tg, g0, u0, 4, rbg, nvalid, nvalid, buf, cap);
    cp_async_commit();
    if (nw) {
        norm_x(xf, E, eps, xsf, xq ? xs : nullptr, xds, true);
        xf = xsf;
    } else if (xq) {
        stage_x(xq, xd, xpad, xs, xds, threadIdx.x, blockDim.x);
    }
    __syncthreads();
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (nvalid > 0) {
        if constexpr (TT >= 0) {   /* specialized: gate and up of one type, int8 x (the host checks) */
            rows_any_s<8, MV, TT>(tg, g0, u0, 4, rbg, nvalid, nvalid, E, xf, xs, xds, acc, buf, cap, pre);
        } else if (fused) {
            rows_any_s<8, MV>(tg, g0, u0, 4, rbg, nvalid, nvalid, E, xf, xq ? xs : nullptr, xds, acc, buf, cap, pre);
        } else {
            rows_any_s<4, MV>(tg, g0, nullptr, 4, rbg, nvalid, 0, E, xf, xq ? xs : nullptr, xds, acc, buf, cap);
            rows_any_s<4, MV>(tu, u0, nullptr, 4, rbu, nvalid, 0, E, xf, xq ? xs : nullptr, xds, acc + 4, buf, cap);
        }
    }
    swiglu_store(acc, acc + 4, nvalid, k, F, r0, h, hq, hd, Fpad);
}
static size_t gateup2_smem(int E, int cap, bool norm = false) {
    return (size_t)xq_pad(E) + xq_pad(E) / 8 + (norm ? 4 * (size_t)xq_pad(E) : 0) + (size_t)8 * 8 * cap;
}

/* Staged down projection of all k experts + routing weights + residual: block = RD
 * output rows, warp per expert slot (its h staged in the warp's shared memory, then
 * RD rows staged at once); fixed-order sum over experts (deterministic, no atomics). */
#ifndef DOWN2_MINB
#define DOWN2_MINB 2   /* 128 registers a thread (168 unbounded): two 50 KB blocks an SM, the 256 blocks in one wave */
#endif
template <int RD, int MV, int TT = SPEC_NONE>
__global__ void __launch_bounds__(NTHR, DOWN2_MINB) k_down2(const uint8_t *__restrict__ wd, int td, size_t rbd, int F, int E, const int *__restrict__ sel,
                                                const float *__restrict__ selw, int K, const float *__restrict__ hf, const int8_t *__restrict__ hq,
                                                const float *__restrict__ hd, int Fpad, float *__restrict__ x, int cap) {
    extern __shared__ __align__(16) uint8_t sbuf[];
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int r0 = blockIdx.x * RD, nvalid = min(RD, E - r0);
    /* Under PDL this block starts once every k_gateup2 block has passed its own wait, i.e.
     * after k_router completed: sel is final in L2 (read past L1 with ld.cg). Each warp asks L2
     * for its experts' rows while gate+up still run. A hint: it cannot change the result. */
    for (int k = warp; k < K; k += NTHR / WARP)
        l2_prefetch(wd + ((size_t)__ldcg(sel + k) * E + r0) * rbd, (size_t)nvalid * rbd, lane, WARP);
    pdl_enter();
    const int xpad = xq_pad(F);
    uint8_t *mine = sbuf + (size_t)warp * (xpad + xpad / 8 + RD * cap);
    int8_t *xs = (int8_t *)mine;
    float *xds = (float *)(mine + xpad);
    uint8_t *buf = mine + xpad + xpad / 8;
    float acc[RD];
#pragma unroll
    for (int r = 0; r < RD; r++) acc[r] = 0.f;
    for (int k = warp; k < K; k += NTHR / WARP) {
        const int e = sel[k];
        const float wk = selw[k];
        if (hq) {
            __syncwarp();
            stage_x(hq + (size_t)k * Fpad, hd + (size_t)k * (Fpad / 32), xpad, xs, xds, lane, WARP);
            __syncwarp();
        }
        float t[RD];
#pragma unroll
        for (int r = 0; r < RD; r++) t[r] = 0.f;
        rows_any_s<RD, MV, TT>(td, wd + ((size_t)e * E + r0) * rbd, nullptr, RD, rbd, nvalid, 0, F, hf + (size_t)k * F, hq ? xs : nullptr, xds, t, buf,
                           cap);
#pragma unroll
        for (int r = 0; r < RD; r++) acc[r] += wk * t[r];
    }
    down_store<RD>(acc, r0, nvalid, x);
}
static size_t down2_smem(int F, int RD, int cap) { return (size_t)(NTHR / WARP) * (xq_pad(F) + xq_pad(F) / 8 + RD * cap); }
/* The staged kernels for a type: specialized where spec_type gives one, else generic */
typedef void (*MmvKernel)(const MVArgs, int, int);
typedef void (*GateUpKernel)(const uint8_t *, int, size_t, const uint8_t *, int, size_t, int, int, const int *, const float *, const int8_t *,
                             const float *, float *, int8_t *, float *, int, int, const float *, float);
typedef void (*DownKernel)(const uint8_t *, int, size_t, int, int, const int *, const float *, int, const float *, const int8_t *, const float *, int,
                           float *, int);
static MmvKernel mmv2_kernel(int tt) {
#define SPEC_CASE(T) case T: return k_mmv2<T>;
    switch (tt) { SPEC_TYPES(SPEC_CASE) default: return k_mmv2<SPEC_NONE>; }
#undef SPEC_CASE
}
static GateUpKernel gateup2_kernel(int tt) {
#define SPEC_CASE(T) case T: return k_gateup2<3, T>;
    switch (tt) { SPEC_TYPES(SPEC_CASE) default: return k_gateup2<3>; }
#undef SPEC_CASE
}
static DownKernel down2_kernel(int tt) {
#define SPEC_CASE(T) case T: return k_down2<8, 2, T>;
    switch (tt) { SPEC_TYPES(SPEC_CASE) default: return k_down2<8, 2>; }
#undef SPEC_CASE
}

/* ======================================================================
 * Persistent decode kernel
 *
 * Every layer of a decode step in one cooperative launch: one block of 16 warps per SM,
 * resident for the whole step, phases separated by grid barriers. Separate kernels
 * could not overlap a phase's weight reads with the tail of the one before (the next
 * kernel's blocks do not fit beside the current one's registers and shared memory);
 * here, between arriving at a barrier and passing it, each warp asks L2 for the weight
 * rows of its next phase, so the DRAM round trip overlaps the wait. Per layer (a row of
 * QWEN3MOE_PERSIST_PROF's report each):
 *   A  RMSNorm (every block) + q/k/v matvec; a q or k head half a block, which writes
 *      rope(x w) unscaled and its sum of squares; v's rows on the other blocks, straight
 *      into the cache
 *   B  attention block items (KV head, group of 8 query heads[, chunk]), each waiting on a
 *      count of its own KV head's q/k/v parts instead of a grid barrier; they scale q and k
 *   C  chunk merge per head (from position 256 on; below it the items write the output)
 *   D  o-proj + residual into h2, and the folded router's logit pieces on the idle warps
 *   E  (no phase: the router is in D, its norm in F)
 *   F  top-k (every block, the same), gate+up+SwiGLU of the K experts and, per 64 of their
 *      outputs, the down projection's matching slab columns added into acc (x = h2 + acc)
 *   G  (no phase: the barrier to the next layer)
 * and after the last layer, H: RMSNorm + the output head + argmax (a head of the family's types).
 * It serves the weights of llama.cpp's Q4_K_M, Q8_0 and Q4_0 mixes, one instantiation per
 * type family (PK_FAM0..2), with int8 activations and heads of 128 (all Qwen3-MoE models);
 * anything else takes the per-kernel graph.
 * ==================================================================== */
#define PK_WARPS 16
#define PK_THREADS (PK_WARPS * WARP)
#define PK_D 128                  /* head_dim served */
#define PK_WB 10752               /* staging bytes per warp: F's gate/up pipe beside the slab rows (pk_ffn: 3 slots and 128 Q6_K rows exactly; with PK_FPIPE 3, 4 slots, 96 rows, the other 32 after the pipe); the kernel's shared memory stays within the 196 KB carveout */
#define PK_MAXK 8
#define PK_SSMAX 256              /* blocks whose partial sums of squares F stages (the grid's limit: persist_setup) */
#define PK_CAP(R) (PK_WB / (R) / 16 * 16)   /* staging bytes per row for R rows a warp (16-byte aligned rows) */
/* The weight types it serves, by family: each family (the types of one of llama.cpp's mixes,
 * all with a wide dot, QW) gets its own instantiation, so no instance carries code for types
 * its model does not use: each more type in one kernel adds to code that must stay small
 * for the instruction cache. */
#define PK_FAM0(X) X(GGML_TYPE_Q4_K) X(GGML_TYPE_Q6_K)   /* Q4_K_M */
#define PK_FAM1(X) X(GGML_TYPE_Q8_0)                     /* Q8_0 */
#define PK_FAM2(X) X(GGML_TYPE_Q4_0) X(GGML_TYPE_Q6_K)   /* Q4_0 (its output is Q6_K) */
#define PK_NFAM 3
/* a switch over the types of family FAM (a constant), CASE(T) for each */
#define PK_FAM_SWITCH(FAM, type, CASE)                                           \
    if constexpr (FAM == 0) { switch (type) { PK_FAM0(CASE) default: break; } }      \
    else if constexpr (FAM == 1) { switch (type) { PK_FAM1(CASE) default: break; } } \
    else { switch (type) { PK_FAM2(CASE) default: break; } }
static const char *const pk_fam_name[PK_NFAM] = {"Q4_K + Q6_K", "Q8_0", "Q4_0 + Q6_K"};
__host__ __device__ constexpr bool pk_serves(int fam, int t) {
#define PK_IS(T) t == T ||
    return fam == 0 ? (PK_FAM0(PK_IS) false) : fam == 1 ? (PK_FAM1(PK_IS) false) : (PK_FAM2(PK_IS) false);
#undef PK_IS
}
#define PK_DSUB 256               /* attention: positions a block item stages at most (K and V: 139 KB of the warps' slots) */
#define PK_DHB 8                  /* attention: query heads per block item (a GQA group of 8: each K/V row read once) */
#define PK_PROF_MAXB 2048         /* barriers a step records at most (QWEN3MOE_PERSIST_PROF) */
#define PK_W 4                    /* lanes a Q4_K superblock in the phases whose rows are >= 2048 wide (A, D, F): QW4K */
#ifndef PK_FPIPE
#define PK_FPIPE 3                /* F: gate/up rows a warp has in flight at once (rows_pipe; 0: all 8): 3 against 2, tg128 +1.2% on the H100 (bench/NOTES.md); 2 for Q8_0 (pipe_for) */
#endif
/* The rows in flight rows_pipe keeps for rows of type t where its caller asks for pipe
 * (pk_rows, pk_issue_pipe, and persist_setup sizing F's slots): Q8_0's wide rows keep 2 (F
 * with 3: its slots leave room beside them for 16 of a warp's 128 slab rows instead of 48,
 * and tg128 on the Q8_0 mix fell 504.1 -> 496.7 on the H100) */
__host__ __device__ constexpr int pipe_for(int t, int pipe) { return t == GGML_TYPE_Q8_0 && pipe > 2 ? 2 : pipe; }
#define PK_PHASES 7               /* per layer, each a row of the profile: A..G below (A, E, F and under AM_ONE B end without a barrier; E is empty) */

struct PLayer {
    const uint8_t *w[7];          /* q, k, v, o, gate, up, down */
    size_t rb[7];
    int t[7];
    const float *attn_norm, *q_norm, *k_norm, *ffn_norm;   /* (the router: folded, PArgs.rwx / rmr) */
    __half *kc, *vc;
    int F;
    const uint8_t *ds;   /* the down weight as slabs (slab_record; persist_setup) */
    int dcb, dpr, fcap;  /* a slab record's bytes; slab rows a warp stages beside F's gate/up pipe; that pipe's bytes a row (pk_rows' cap) */
};
enum { PW_Q, PW_K, PW_V, PW_O, PW_G, PW_U, PW_D };

struct PArgs {
    const PLayer *L;
    int nl, E, nh, nkv, qdim, kvdim, ne, K, nch;
    float eps, theta_scale, scale;
    float *x, *qkv, *part, *rpart;
    float *h2;          /* D's output x + W_o attn; the next layer's x is h2 + acc */
    long long *acc;     /* F's down products, summed as fixed point (PK_FX): zeroed by D, read with h2 by the next A and the head */
    const __half *rwx;  /* the router folded (pk_fold_setup): [layer][ne][E] W_r diag(ffn_norm), f16 */
    const __half *rmr;  /* [layer][ne][qdim] that times W_o, f16 */
    int8_t *aq;
    float *ad;   /* float2s in the persistent kernel: per 32, the scale and the scale times the sum (warp_quant2) */
    unsigned *bar;
    unsigned *kvc;   /* A -> B: per KV head, its q and k halves and v groups done (pk_kv_done), counted over the step's layers */
    float *ssx;   /* A: [head][half] the halves' sums of squares (pk_rope), q heads then k heads */
    float *ssq;   /* per block, the sum of squares of the h2 rows it wrote in D (F's norm) */
    const int *pos_dev;
    int *rec;
    float *recp;
    const int *force, *force_on;
    /* the output head as the last phase (head != 0): RMSNorm, logits, argmax */
    int head, nvocab, out_t;
    const uint8_t *out_w;
    size_t out_rb;
    const float *out_norm;
    float *logits;
    unsigned long long *amax;
    unsigned long long *prof;   /* QWEN3MOE_PERSIST_PROF: [barrier][block] arrival times, then [barrier] block 0's pass */
};
struct PSmem {
    int8_t *xs;      /* in xs_at's layout */
    float2 *xds;     /* per 32: the scale, and the scale times the sum */
    float *hc;       /* F: the item's 64 values of h */
    int8_t *hcq;     /* and as int8, with hcd[2] (warp_quant2's) */
    float2 *hcd;
    float *xsf, *lg, *selw;
    float *xr;       /* x as A read it (f32), for the folded router in D; then h2 for F's norm */
    float *ssp;      /* [PK_SSMAX]: D's partial sums of squares of h2, for F's norm */
    uint64_t *mb;    /* [3][PK_WARPS]: the warps' mbarriers: A's first rows (pk_pre_qkv), F's early and late slab rows (pk_ffn) */
    int *sel;
    float *res;      /* [PK_WARPS][PK_MAXK]: a warp's row totals (rows_qp) */
    uint8_t *wb;
};
static size_t pk_smem(int E, int qdim, int ne) {
    const size_t xp = xq_pad(std::max(E, qdim));
    return xs_bytes(xp) + xp / 4 + 8 * (size_t)E + 4 * 64 + 64 + 16 + 4 * (size_t)((ne + 3) / 4 * 4) + 8 * PK_MAXK + 4 * PK_WARPS * PK_MAXK +
           4 * PK_SSMAX + 8 + 8 * 3 * PK_WARPS + 64 + (size_t)PK_WARPS * PK_WB;
}

/* Wide dot products: 8 lanes per 256-weight superblock and 32 weights a lane (16-byte
 * loads), so the scale decode, the x loads and the loop are paid once per 32 weights
 * instead of once per 8 as in QT<T>::dot (decode is bound by these instructions). X holds
 * the lane's activations for one superblock, shared by the rows that use it. */
template <int T> struct QW { enum { OK = 0 }; struct X {}; };
/* The high nibbles of q against signed x, as dp4a of q & 0xF0F0F0F0 (unsigned bytes, 16x
 * the nibbles): one LOP a word where (q >> 4) & 0x0F0F0F0F takes a shift and a LOP; the
 * chain's sum is 16x the nibbles' dot, exactly (>> 4 once at its end). */
__device__ __forceinline__ int dp4a_hi(uint32_t q, int x, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(q & 0xF0F0F0F0u), "r"(x), "r"(c));
    return d;
}
/* x (xq: the staged int8 in xs_at's layout, element e at xq + xs_at(xe + e); xd: per 32 of
 * the row's x, the scale and the scale times the group's sum) */
#define XQ(off) (*(const int4 *)(xq + xs_at(xe + (off))))
template <> struct QW<GGML_TYPE_Q4_K> {
    enum { OK = 1 };
    struct X { int4 a, b; float d0, d1, m0, m1; };
    /* lane j: chunk c = j/2 of 64 weights (sub-blocks 2c and 2c+1), half j%2 of it */
    static __device__ __forceinline__ void x(const int8_t *xq, int xe, const float2 *xd, int sb, int j, X &v) {
        const int c = j >> 1, p0 = sb * 256 + 64 * c + 16 * (j & 1);
        v.a = XQ(p0);
        v.b = XQ(p0 + 32);
        const float2 g0 = xd[sb * 8 + 2 * c], g1 = xd[sb * 8 + 2 * c + 1];
        v.d0 = g0.x;
        v.d1 = g1.x;
        /* the mins' term needs the sums of whole sub-blocks, added once: by the lane of half 0 */
        v.m0 = j & 1 ? 0.f : g0.y;
        v.m1 = j & 1 ? 0.f : g1.y;
    }
    /* the 6-bit scales and mins of sub-blocks 2c, 2c+1 (k4_scale, both at once, no branch) */
    static __device__ __forceinline__ void scales(const uint8_t *b, int c, uint32_t &scp, uint32_t &mp) {
        const uint32_t sh = 16 * (c & 1);
        const uint32_t A = *(const uint32_t *)(b + 4) >> sh, B = *(const uint32_t *)(b + 8) >> sh, C = *(const uint32_t *)(b + 12) >> sh;
        scp = c < 2 ? A & 0x3F3Fu : (C & 0x0F0Fu) | ((A >> 2) & 0x3030u);
        mp = c < 2 ? B & 0x3F3Fu : ((C >> 4) & 0x0F0Fu) | ((B >> 2) & 0x3030u);
    }
    /* the superblock's sum from the sub-block sums (integer products are exact: |sc * v| < 2^22) */
    static __device__ __forceinline__ float total(const uint8_t *b, uint32_t scp, uint32_t mp, int v0, int v1, float d0, float d1, float m0, float m1) {
        const float2 dm = __half22float2(*(const __half2 *)b);
        return dm.x * (d0 * (float)((int)(scp & 0xFF) * v0) + d1 * (float)((int)(scp >> 8 & 0xFF) * v1)) -
               dm.y * ((float)(int)(mp & 0xFF) * m0 + (float)(int)(mp >> 8 & 0xFF) * m1);
    }
    static __device__ __forceinline__ float dot(const uint8_t *b, int j, const X &v) {   /* b: the superblock, 16-byte aligned */
        const int c = j >> 1;
        const uint4 q = *(const uint4 *)(b + 16 + 32 * c + 16 * (j & 1));
        const uint32_t M = 0x0F0F0F0Fu;
        int v0 = __dp4a((int)(q.x & M), v.a.x, 0), v1 = dp4a_hi(q.x, v.b.x, 0);
        v0 = __dp4a((int)(q.y & M), v.a.y, v0); v1 = dp4a_hi(q.y, v.b.y, v1);
        v0 = __dp4a((int)(q.z & M), v.a.z, v0); v1 = dp4a_hi(q.z, v.b.z, v1);
        v0 = __dp4a((int)(q.w & M), v.a.w, v0); v1 = dp4a_hi(q.w, v.b.w, v1);
        uint32_t scp, mp;
        scales(b, c, scp, mp);
        return total(b, scp, mp, v0, v1 >> 4, v.d0, v.d1, v.m0, v.m1);
    }
};
/* Q4_K with 4 lanes a superblock (lane j: the whole chunk j of 64 weights): the scale
 * decode and the float tail paid once per 64 weights, the loop once per 8 superblocks (a
 * 2048-wide row in one step); for rows of at least 2048 (A's q/k, D, F). */
struct QW4K {
    struct X { int4 a0, a1, b0, b1; float d0, d1, m0, m1; };
    static __device__ __forceinline__ void x(const int8_t *xq, int xe, const float2 *xd, int sb, int j, X &v) {
        const int p0 = sb * 256 + 64 * j;
        v.a0 = XQ(p0);
        v.a1 = XQ(p0 + 16);
        v.b0 = XQ(p0 + 32);
        v.b1 = XQ(p0 + 48);
        const float2 g0 = xd[sb * 8 + 2 * j], g1 = xd[sb * 8 + 2 * j + 1];
        v.d0 = g0.x;
        v.d1 = g1.x;
        v.m0 = g0.y;
        v.m1 = g1.y;
    }
    static __device__ __forceinline__ float dot(const uint8_t *b, int j, const X &v) {
        const uint4 q0 = *(const uint4 *)(b + 16 + 32 * j), q1 = *(const uint4 *)(b + 32 + 32 * j);
        const uint32_t M = 0x0F0F0F0Fu;
        int v0 = __dp4a((int)(q0.x & M), v.a0.x, 0), v1 = dp4a_hi(q0.x, v.b0.x, 0);
        v0 = __dp4a((int)(q0.y & M), v.a0.y, v0); v1 = dp4a_hi(q0.y, v.b0.y, v1);
        v0 = __dp4a((int)(q0.z & M), v.a0.z, v0); v1 = dp4a_hi(q0.z, v.b0.z, v1);
        v0 = __dp4a((int)(q0.w & M), v.a0.w, v0); v1 = dp4a_hi(q0.w, v.b0.w, v1);
        v0 = __dp4a((int)(q1.x & M), v.a1.x, v0); v1 = dp4a_hi(q1.x, v.b1.x, v1);
        v0 = __dp4a((int)(q1.y & M), v.a1.y, v0); v1 = dp4a_hi(q1.y, v.b1.y, v1);
        v0 = __dp4a((int)(q1.z & M), v.a1.z, v0); v1 = dp4a_hi(q1.z, v.b1.z, v1);
        v0 = __dp4a((int)(q1.w & M), v.a1.w, v0); v1 = dp4a_hi(q1.w, v.b1.w, v1);
        uint32_t scp, mp;
        QW<GGML_TYPE_Q4_K>::scales(b, j, scp, mp);
        return QW<GGML_TYPE_Q4_K>::total(b, scp, mp, v0, v1 >> 4, v.d0, v.d1, v.m0, v.m1);
    }
};
/* 8 bytes at any shared-memory address (Q6_K's 210-byte blocks, Q8_0's 34, Q4_0's 18 leave
 * them unaligned): two funnel shifts over the aligned words (one past the end may be read:
 * rows are staged with slack) */
__device__ __forceinline__ uint2 ld8_a2(const uint8_t *p) {
    const uint32_t *w = (const uint32_t *)(p - ((uintptr_t)p & 3));   /* by an offset, not a cast from an integer: the compiler keeps knowing p is shared memory (LDS, not generic LD) */
    const uint32_t sh = ((uint32_t)(uintptr_t)p & 3u) * 8u;
    const uint32_t a = w[0], b = w[1], c = w[2];
    return make_uint2(__funnelshift_r(a, b, sh), __funnelshift_r(b, c, sh));
}
/* Q6_K, one 32-bit word of a lane's streams: a (low nibbles of quarters 0 and 2), bb (of 1
 * and 3), hh (their 2 high bits) against the x words of the 4 quarters, into their sums */
__device__ __forceinline__ void q6_word(uint32_t a, uint32_t bb, uint32_t hh, int x0, int x1, int x2, int x3, int &v0, int &v1, int &v2, int &v3) {
    const uint32_t M = 0x0F0F0F0Fu, H = 0x30303030u;
    v0 = __dp4a((int)((a & M) | ((hh << 4) & H)), x0, v0);
    v1 = __dp4a((int)((bb & M) | ((hh << 2) & H)), x1, v1);
    v2 = __dp4a((int)(((a >> 4) & M) | (hh & H)), x2, v2);
    v3 = __dp4a((int)(((bb >> 4) & M) | ((hh >> 2) & H)), x3, v3);
}
/* The quarters' sums scaled: scale is (of each pair) of the half's 8 (sc), the offset of 32
 * by the sums s of the lane's own x, d the x scales */
__device__ __forceinline__ float q6_total(const uint8_t *b, uint2 sc, int is, const float *d, const int *s, int v0, int v1, int v2, int v3) {
    const int s0 = (int8_t)(sc.x >> (8 * is)), s1 = (int8_t)(sc.x >> (8 * is + 16)), s2 = (int8_t)(sc.y >> (8 * is)), s3 = (int8_t)(sc.y >> (8 * is + 16));
    return ldh(b + 208) * ((float)s0 * d[0] * (float)(v0 - 32 * s[0]) + (float)s1 * d[1] * (float)(v1 - 32 * s[1]) +
                           (float)s2 * d[2] * (float)(v2 - 32 * s[2]) + (float)s3 * d[3] * (float)(v3 - 32 * s[3]));
}
template <> struct QW<GGML_TYPE_Q6_K> {
    enum { OK = 1 };
    struct X { int2 x[4]; float d[4]; int s[4]; };
    /* lane j: half h = j/4 of 128 weights, columns l0 = 8 (j%4) .. +8 of its four quarters.
     * The offset's sums are the lane's own 8 values (the scales change every 16: the
     * sums of whole groups of 32 would not do). */
    static __device__ __forceinline__ void x(const int8_t *xq, int xe, const float2 *xd, int sb, int j, X &v) {
        const int h = j >> 2, l0 = 8 * (j & 3);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            v.x[k] = *(const int2 *)(xq + xs_at(xe + sb * 256 + 128 * h + 32 * k + l0));
            v.d[k] = xd[sb * 8 + 4 * h + k].x;
            v.s[k] = dp4a_sum(v.x[k].x) + dp4a_sum(v.x[k].y);
        }
    }
    static __device__ __forceinline__ float dot(const uint8_t *b, int j, const X &v) {
        const int h = j >> 2, l0 = 8 * (j & 3), is = l0 >> 4;
        const uint2 qa = ld8_a2(b + 64 * h + l0), qb = ld8_a2(b + 64 * h + 32 + l0), qh = ld8_a2(b + 128 + 32 * h + l0);
        const uint2 sc = ld8_a2(b + 192 + 8 * h);
        int v0 = 0, v1 = 0, v2 = 0, v3 = 0;
        q6_word(qa.x, qb.x, qh.x, v.x[0].x, v.x[1].x, v.x[2].x, v.x[3].x, v0, v1, v2, v3);
        q6_word(qa.y, qb.y, qh.y, v.x[0].y, v.x[1].y, v.x[2].y, v.x[3].y, v0, v1, v2, v3);
        return q6_total(b, sc, is, v.d, v.s, v0, v1, v2, v3);
    }
};

/* The 32-wide types, 8 blocks a 256-weight superblock: lane j takes block j whole (its
 * 32 quants at a 2-byte aligned offset, read with ld8_a2) */
template <> struct QW<GGML_TYPE_Q8_0> {
    enum { OK = 1 };
    struct X { int4 a, b; float d; };
    static __device__ __forceinline__ void x(const int8_t *xq, int xe, const float2 *xd, int sb, int j, X &v) {
        v.a = XQ(sb * 256 + 32 * j);
        v.b = XQ(sb * 256 + 32 * j + 16);
        v.d = xd[sb * 8 + j].x;
    }
    static __device__ __forceinline__ float dot(const uint8_t *b, int j, const X &v) {
        const uint8_t *q = b + 34 * j;
        const uint2 w0 = ld8_a2(q + 2), w1 = ld8_a2(q + 10), w2 = ld8_a2(q + 18), w3 = ld8_a2(q + 26);
        int s = __dp4a((int)w0.x, v.a.x, 0);
        s = __dp4a((int)w0.y, v.a.y, s); s = __dp4a((int)w1.x, v.a.z, s); s = __dp4a((int)w1.y, v.a.w, s);
        s = __dp4a((int)w2.x, v.b.x, s); s = __dp4a((int)w2.y, v.b.y, s); s = __dp4a((int)w3.x, v.b.z, s); s = __dp4a((int)w3.y, v.b.w, s);
        return ldh(q) * v.d * (float)s;
    }
};
template <> struct QW<GGML_TYPE_Q4_0> {
    enum { OK = 1 };
    struct X { int4 a, b; float d, m; };
    static __device__ __forceinline__ void x(const int8_t *xq, int xe, const float2 *xd, int sb, int j, X &v) {
        v.a = XQ(sb * 256 + 32 * j);        /* elements 0..15: the low nibbles */
        v.b = XQ(sb * 256 + 32 * j + 16);   /* 16..31: the high ones */
        v.d = xd[sb * 8 + j].x;
        v.m = xd[sb * 8 + j].y;
    }
    static __device__ __forceinline__ float dot(const uint8_t *b, int j, const X &v) {
        const uint8_t *q = b + 18 * j;
        const uint2 w0 = ld8_a2(q + 2), w1 = ld8_a2(q + 10);
        const uint32_t M = 0x0F0F0F0Fu;
        int s = __dp4a((int)(w0.x & M), v.a.x, 0), t = dp4a_hi(w0.x, v.b.x, 0);
        s = __dp4a((int)(w0.y & M), v.a.y, s); s = __dp4a((int)(w1.x & M), v.a.z, s); s = __dp4a((int)(w1.y & M), v.a.w, s);
        t = dp4a_hi(w0.y, v.b.y, t); t = dp4a_hi(w1.x, v.b.z, t); t = dp4a_hi(w1.y, v.b.w, t);
        return ldh(q) * (v.d * (float)(s + (t >> 4)) - 8.f * v.m);
    }
};

/* (wp, here and in the row loops below: a row table, wp[r] row r's first byte: an array of
 * pointers, or one of the persistent kernel's computed tables, PkPairRows and the like.)
 * The 16-byte copies of bytes [cb0, cb1) of R rows given by pointers (row r when bit r of
 * ok is set) into the warp's buffer (row r at buf + r * cap, from the 16-byte boundary
 * below its start). Weight rows are read once per token (1.9 GB against 50 MB of L2):
 * marked to be evicted first, they leave L2 to what is read again (the kernel's code,
 * activations, partials, the KV cache). */
template <class WP>
__device__ __forceinline__ void rows_issue_p(const WP &wp, int R, unsigned ok, size_t cb0, size_t cb1, uint8_t *buf, int cap) {
#pragma unroll 1
    for (int r = 0; r < R; r++) row_issue16<true>(wp[r] + cb0, cb1 - cb0, buf + r * cap, (ok >> r) & 1);
}
__device__ __forceinline__ unsigned long long gtimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
/* Row r of a warp's staged chunk (bytes cb0.. of each row, copied from the 16-byte boundary
 * below wp[r] + cb0: rows_issue_p's layout), offset so that the row's superblock it (SB
 * bytes each, counted from the row's start) is at the result + it * SB */
template <class WP>
__device__ __forceinline__ const uint8_t *staged_row(const uint8_t *buf, int r, int cap, const WP &wp, size_t cb0) {
    return buf + r * cap + (int)((uintptr_t)(wp[r] + cb0) & 15) - (int)cb0;
}
/* Rows that share one x (A, D, F, H), R of them (2, 4, 8): a lane loads its x of a
 * superblock once for all R rows (the pair loop reloaded it per pair), keeps the R row sums
 * in registers (rotated one place a row, so that the rolled row loop indexes none) and
 * reduces them over the warp by halving: log2(R) exchange steps each send half the sums
 * and keep the other half, then the full steps, 9 shuffles for 8 rows instead of 40. The
 * additions are warp_sum's, lane for lane: the totals are bit for bit those of the pair
 * loop. Shared-memory wavefronts are the multiply's other limit beside issue slots (the
 * shuffles go through the same unit), and this cuts them by ~40% for 8 rows. */
template <typename Q, int L, int R, class WP>
__device__ __forceinline__ void rows_shx(const WP &wp, unsigned ok, size_t cb0, const int8_t *xq, const float2 *xd, int it0, int it1, int SB,
                                         float *res, const uint8_t *buf, int cap) {
    static_assert(R == 2 || R == 4 || R == 8, "rows_shx: 2, 4 or 8 rows");
    const int lane = threadIdx.x % WARP, j = lane % L;
    float acc[R];   /* acc[R - 1 - r]: row r's sum, between superblocks */
#pragma unroll
    for (int k = 0; k < R; k++) acc[k] = 0.f;
#pragma unroll 1
    for (int it = it0 + lane / L; it < it1; it += WARP / L) {   /* superblock it per L lanes */
        typename Q::X xv;
        Q::x(xq, 0, xd, it, j, xv);
#pragma unroll 1
        for (int r = 0; r < R; r++) {
            float v = acc[R - 1];
            if ((ok >> r) & 1) v += Q::dot(staged_row(buf, r, cap, wp, cb0) + it * SB, j, xv);
#pragma unroll
            for (int k = R - 1; k > 0; k--) acc[k] = acc[k - 1];
            acc[0] = v;
        }
    }
    float v[R];
#pragma unroll
    for (int r = 0; r < R; r++) v[r] = acc[R - 1 - r];
    int row = 0;
#pragma unroll
    for (int n = R, o = WARP / 2; n > 1; n >>= 1, o >>= 1) {   /* keep rows [row, row + n/2) (lower lanes) or the upper half */
        const bool up = lane & o;
#pragma unroll
        for (int k = 0; k < n / 2; k++) {
            const float send = up ? v[k] : v[k + n / 2], keep = up ? v[k + n / 2] : v[k];
            v[k] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
        if (up) row += n / 2;
    }
#pragma unroll
    for (int o = WARP / 2 / R; o > 0; o >>= 1) v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
    if ((lane & (WARP / R - 1)) == 0) res[row] = (it0 ? res[row] : 0.f) + v[0];
}
/* Rows that share one x, P of them in flight at a time (F's gate/up rows): row r + P is
 * asked for once row r has landed, and each row is multiplied as it lands. The point is
 * the memory system's queues more than the overlap: with every SM's whole phase asked for
 * at once (F: 14 MB) an L2 hit beside the stream waits 1.4-2.3 us instead of 0.15, while
 * ~4 MB in flight already keeps the copies at ~3 TB/s (bench/contention_probe.cu on the
 * H100; bench/NOTES.md P87: F 13.4 -> 11.9 us a layer). The rows go round P + 1 slots of
 * the warp's buffer (slot bytes each; the caller checks that a row fits), so a slot is
 * refilled only after the row in it was used. x is read again per row, so that nothing
 * but the row loop is live across the waits (holding it cost spills). */
template <int P> __device__ __forceinline__ int pipe_slot(int bytes) { return bytes / (P + 1) / 16 * 16; }
/* whether a whole row (niter superblocks of SB bytes, plus the slack for a misaligned start
 * and the dots' read past the end) fits a slot: rows_qp's test for rows_pipe, and
 * pk_issue_pipe's, which must agree with it */
__device__ __forceinline__ bool pipe_fits(int niter, int SB, int slot) { return (size_t)niter * SB + 31 <= (size_t)slot; }
template <int R, int P, class WP>
__device__ __forceinline__ void rows_pipe_issue(const WP &wp, unsigned ok, int nb, uint8_t *buf, int slot) {
#pragma unroll 1
    for (int r = 0; r < P; r++) {
        if (r < R) row_issue16<true>(wp[r], nb, buf + r * slot, (ok >> r) & 1);
        cp_async_commit();
    }
}
template <typename Q, int L, int R, int P, class WP>
__device__ __forceinline__ void rows_pipe(const WP &wp, unsigned ok, size_t rb, const int8_t *xq, const float2 *xd, int niter, int SB,
                                          float *res, uint8_t *buf, int slot, bool pre, unsigned long long *stamp) {
    const int lane = threadIdx.x % WARP, j = lane % L;
    const int nb = (int)min((size_t)niter * SB, rb);
    if (!pre) {   /* else issued by pk_issue_pipe (the same rows, slots and bytes) */
        rows_pipe_issue<R, P>(wp, ok, nb, buf, slot);
        if (stamp && lane == 0) stamp[0] = gtimer();
    }
    int sr = 0;   /* row r's slot: r % (P + 1) */
#pragma unroll 1
    for (int r = 0; r < R; r++) {
        cp_async_wait_group<P - 1>();   /* every group but the last P - 1: row r's */
        __syncwarp();                   /* and every lane is through row r - 1, whose slot row r + P takes */
        if (stamp && lane == 0 && r == 0) stamp[1] = gtimer();
        const int sn = sr == 0 ? P : sr - 1;
        if (r + P < R) row_issue16<true>(wp[r + P], nb, buf + sn * slot, (ok >> (r + P)) & 1);
        cp_async_commit();   /* empty past the last row: row r + 1's group stays P - 1 behind */
        float v = 0.f;
        if ((ok >> r) & 1) {
            const uint8_t *row = buf + sr * slot + (int)((uintptr_t)wp[r] & 15);   /* staged_row's offset, in slot sr */
#pragma unroll 1
            for (int it = lane / L; it < niter; it += WARP / L) {
                typename Q::X xv;
                Q::x(xq, 0, xd, it, j, xv);
                v += Q::dot(row + it * SB, j, xv);
            }
        }
        v = warp_sum(v);   /* while the next row lands */
        if (lane == 0) res[r] = v;
        sr = sr == P ? 0 : sr + 1;
    }
    __syncwarp();
}
/* The dot a phase uses for type T: W = 4 takes QW4K for Q4_K (rows >= 2048 wide); every
 * other case the 8-lane QW<T> */
template <int T, int W> struct QWsel { using Q = QW<T>; enum { L = 8 }; };
template <> struct QWsel<GGML_TYPE_Q4_K, 4> { using Q = QW4K; enum { L = 4 }; };
/* pre: the first chunk's copies were issued already (pk_issue, the same arguments).
 * T: a type with a wide dot (QW<T>::OK). Row r's total goes to res[r] (the warp's
 * shared slots; read them after __syncwarp). The rows share x (rows_shx), in a rolled
 * loop: the persistent kernel must stay small for the instruction cache, which a fully
 * unrolled R x dot per phase and type overflowed. (One non-inlined copy for all phases was smaller still, 150 KB against
 * 230, but its calls spilled: 337 against 354 tok/s.) stamp (QWEN3MOE_PERSIST_PROF, else
 * null): lane 0 writes the time its first copies were issued, and when they landed. xq,
 * xd: x in the staging layout (xs_at, a float2 of scale and scale x sum per 32). */
template <int T, int W, int R, int PIPE = 0, class WP>
__device__ __forceinline__ void rows_qp(const WP &wp, unsigned ok, size_t rb, int ncols, const int8_t *xq, const float2 *xd,
                                      float *res, uint8_t *buf, int cap, bool pre, unsigned long long *stamp) {
    using Q = typename QWsel<T, W>::Q;
    constexpr int L = QWsel<T, W>::L;   /* lanes a superblock */
    const int lane = threadIdx.x % WARP;
    const int SB = stage_sb<T>(), niter = ncols / 256;
    const int ipc = stage_ipc<5>(SB, cap);
    if constexpr (PIPE > 0) {
        const int slot = pipe_slot<PIPE>(R * cap);
        if (pipe_fits(niter, SB, slot)) {   /* a whole row in a slot (pre: pk_issue_pipe's) */
            rows_pipe<Q, L, R, PIPE>(wp, ok, rb, xq, xd, niter, SB, res, buf, slot, pre, stamp);
            return;
        }
    }
#pragma unroll 1
    for (int it0 = 0; it0 < niter; it0 += ipc) {
        const int it1 = min(niter, it0 + ipc);
        const size_t cb0 = (size_t)it0 * SB, cb1 = min((size_t)it1 * SB, rb);
        if (!(pre && it0 == 0)) rows_issue_p(wp, R, ok, cb0, cb1, buf, cap);
        if (stamp && lane == 0 && it0 == 0) stamp[0] = gtimer();
        cp_async_wait_all();
        __syncwarp();
        if (stamp && lane == 0 && it0 == 0) stamp[1] = gtimer();
        rows_shx<Q, L, R>(wp, ok, cb0, xq, xd, it0, it1, SB, res, buf, cap);
        __syncwarp();
    }
}
template <int FAM, int R, int W = 8, int PIPE = 0, class WP>
__device__ __forceinline__ void pk_rows(int type, const WP &wp, unsigned ok, size_t rb, int ncols, const int8_t *xq, const float2 *xd,
                                        float *res, uint8_t *buf, bool pre = false, unsigned long long *stamp = nullptr, int cap = PK_CAP(R)) {
#define PK_CASE(T) case T: rows_qp<T, W, R, pipe_for(T, PIPE)>(wp, ok, rb, ncols, xq, xd, res, buf, cap, pre, stamp); break;
    PK_FAM_SWITCH(FAM, type, PK_CASE)
#undef PK_CASE
}
/* Issue (and commit) the first chunk of pk_rows<R>'s copies, e.g. before a barrier wait:
 * weights are never written, and the warp's buffer is free once its block has arrived. */
/* The bytes of a row (of rb) that pk_rows<R>'s first chunk stages; 0 for a type outside the family */
template <int FAM, int R> __device__ __forceinline__ size_t pk_chunk0(int type, size_t rb) {
    int sb = 0;
#define PK_CASE(T) case T: sb = stage_sb<T>(); break;
    PK_FAM_SWITCH(FAM, type, PK_CASE)
#undef PK_CASE
    return sb ? min((size_t)stage_ipc<5>(sb, PK_CAP(R)) * sb, rb) : 0;
}
template <int FAM, int R, class WP>
__device__ __forceinline__ void pk_issue(int type, const WP &wp, unsigned ok, size_t rb, uint8_t *buf) {
    const size_t nb = pk_chunk0<FAM, R>(type, rb);
    if (nb) rows_issue_p(wp, R, ok, 0, nb, buf, PK_CAP(R));
    cp_async_commit();
}
/* The same for pk_rows<R, PIPE> whose rows take rows_pipe: its first P rows (P =
 * pipe_for(type, PIPE), as pk_rows takes), into their slots. False (nothing issued) where rows_qp
 * would not take rows_pipe: pk_rows then issues its own (pre = false). */
template <int T, int R, int P, class WP>
__device__ __forceinline__ bool pk_issue_pipe_t(const WP &wp, unsigned ok, size_t rb, int ncols, uint8_t *buf, int cap) {
    const int sb = stage_sb<T>(), slot = pipe_slot<P>(R * cap);
    if (!pipe_fits(ncols / 256, sb, slot)) return false;
    rows_pipe_issue<R, P>(wp, ok, (int)min((size_t)(ncols / 256) * sb, rb), buf, slot);
    return true;
}
template <int FAM, int R, int PIPE, class WP>
__device__ __forceinline__ bool pk_issue_pipe(int type, const WP &wp, unsigned ok, size_t rb, int ncols, uint8_t *buf, unsigned long long *stamp,
                                              int cap = PK_CAP(R)) {
    bool pre = false;
#define PK_CASE(T) case T: pre = pk_issue_pipe_t<T, R, pipe_for(T, PIPE)>(wp, ok, rb, ncols, buf, cap); break;
    PK_FAM_SWITCH(FAM, type, PK_CASE)
#undef PK_CASE
    if (pre && stamp && threadIdx.x % WARP == 0) stamp[0] = gtimer();
    return pre;
}

/* The ordering the persistent kernel's flags need (stores before a counter's update are
 * seen by whoever sees the update) is acquire-release: cheaper than __threadfence, a
 * sequentially consistent fence, whose extra guarantee no flag here relies on. */
__device__ __forceinline__ void pk_fence() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }
/* QWEN3MOE_PERSIST_PROF: point i (< PK_MARKS) of layer l's step, stamped by block blk's
 * (0's, B's marks the block of item 0's) first warp: pk_mark (thread 0), or rows_qp's
 * stamps (marks i, i + 1) where pk_stamp gives it the slot (else null) */
#define PK_MARKS 20
__device__ __forceinline__ unsigned long long *pk_stamp(const PArgs &a, int l, int i, unsigned blk = 0) {
    return a.prof && blockIdx.x == blk && threadIdx.x < WARP ? a.prof + (size_t)PK_PROF_MAXB * (gridDim.x + 1) + (size_t)l * PK_MARKS + i : nullptr;
}
__device__ __forceinline__ void pk_mark(const PArgs &a, int l, int i, unsigned blk = 0) {
    if (unsigned long long *p = pk_stamp(a, l, i, blk); p && threadIdx.x == 0) *p = gtimer();
}
/* Split grid barrier: arrive, do something useful (prefetch), wait. The counter is zeroed
 * before each launch; barrier n completes when it reaches n * gridDim.x. ssq: where the
 * block's partial sum of squares goes (norm_xq's), its warps' in ssw[w * PK_MAXK] (their
 * first row total slots, free by then). */
__device__ __forceinline__ void pk_arrive(unsigned *bar, unsigned long long *prof, float *ssq = nullptr, const float *ssw = nullptr) {
    __syncthreads();
    if (threadIdx.x == 0) {
        if (ssq) {
            float t = 0.f;
#pragma unroll
            for (int w = 0; w < PK_WARPS; w++) t += ssw[w * PK_MAXK];
            ssq[blockIdx.x] = t;
        }
        if (prof) prof[blockIdx.x] = gtimer();
        pk_fence();
        atomicAdd(bar, 1u);
    }
}
/* one thread: until the counter reaches target (acquire: what was stored before its updates is seen after) */
__device__ __forceinline__ void pk_spin(const unsigned *cnt, unsigned target) {
    unsigned v;
    do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(cnt) : "memory");
    while (v < target);
}
__device__ __forceinline__ void pk_wait(const unsigned *bar, unsigned target) {
    if (threadIdx.x == PK_THREADS - WARP) pk_spin(bar, target);   /* the last warp polls: it has the fewest rows to issue between arrive and wait */
    __syncthreads();
}

/* A -> B without a grid barrier: a KV head's attention needs only that head's q and k
 * halves and v groups, so its block waits on their count (a.kvc, zeroed with the barrier
 * counter before each launch, never reset: layer l's are done at (l + 1) parts) instead of
 * on every block's A; the blocks with no item go on to D's window at once. */
__device__ __forceinline__ unsigned pk_kv_parts(const PArgs &a) { return 2 * (a.nh / a.nkv) + 2 + PK_D / 4; }
/* a whole warp, after its stores of a part of KV head kvh (each lane's fenced, as in threadFenceReduction) */
__device__ __forceinline__ void pk_kv_done(const PArgs &a, int kvh) {
    pk_fence();
    __syncwarp();
    if (threadIdx.x % WARP == 0) atomicAdd(a.kvc + kvh, 1u);
}
__device__ __forceinline__ void pk_kv_wait(const PArgs &a, int kvh, int l) {
    if (threadIdx.x == 0) pk_spin(a.kvc + kvh, (unsigned)(l + 1) * pk_kv_parts(a));
    __syncthreads();
}

/* After a warp has stored its part (n of total items) of a group: whether it completed the
 * group, i.e. was the last to arrive (the counter is reset for the next use). Every other
 * warp's stores are then visible to it (fences on both sides, as in threadFenceReduction). */
__device__ __forceinline__ bool warp_completes(unsigned *cnt, unsigned n, unsigned total) {
    int done = 0;
    if (threadIdx.x % WARP == 0) {
        pk_fence();
        done = atomicAdd(cnt, n) + n == total;
        if (done) *cnt = 0u;
    }
    done = __shfl_sync(0xffffffffu, done, 0);
    if (done) pk_fence();
    return done;
}

/* Half hf of q or k head hh after its matvec (one warp): the pairs (i, i + D/2) for i in
 * [32 hf, 32 hf + 32), from the block's row totals y in shared memory (pair j's rows are
 * warp j/2's slots j%2 and j%2 + 2). The head's RMSNorm needs the other half's sum of
 * squares, but its 1 / rms is one scalar and the rope is linear, so this half writes its
 * own partial and rope(x * w) unscaled (f32, q or k at its place in qkv), and B scales both
 * (pk_item_q_pad: it loads them in one round trip anyway, and it writes the step's k row to
 * the cache). The halves exchanged their partials here before, a round trip on A's
 * critical path (bench/NOTES.md P105). */
__device__ void pk_rope(const PArgs &a, const PLayer &L, int hh, int hf, int pos, const float *y) {
    const int lane = threadIdx.x % WARP, D = PK_D, half = D / 2;
    const float *w = hh < a.nh ? L.q_norm : L.k_norm;
    const int i = 32 * hf + lane, yi = PK_MAXK * (lane / 2) + (lane & 1);
    const float x0 = y[yi], x1 = y[yi + 2];
    const float ss = warp_sum(x0 * x0 + x1 * x1);
    if (lane == 0) a.ssx[2 * hh + hf] = ss;
    float r0, r1;
    rope_pair<true>(x0 * w[i], x1 * w[i + half], pos, i, a.theta_scale, r0, r1);
    float *q = a.qkv + hh * D;   /* k heads after the q heads: qkv's k part */
    q[i] = r0;
    q[i + half] = r1;
    pk_kv_done(a, hh < a.nh ? hh / (a.nh / a.nkv) : hh - a.nh);
}
/* 1 / rms of head hh (q heads, then k heads) from its halves' partials (pk_rope's) */
__device__ __forceinline__ float pk_head_rs(const PArgs &a, int hh) {
    return 1.0f / sqrtf((__ldcg(a.ssx + 2 * hh) + __ldcg(a.ssx + 2 * hh + 1)) / PK_D + a.eps);
}

/* The router folded into D (bench/NOTES.md P100). F's input is RMSNorm(h) with
 * h = x + W_o a (x the layer's input, a the attention's output), so the router's logits are
 *   rs * (Wx x + Mr a),  Wx = W_r diag(ffn_norm),  Mr = Wx W_o  (both f16, made at load),
 * with rs = 1 / rms(h) > 0: the top-k's choice is that of Wx x + Mr a, and rs (F's norm)
 * scales the chosen logits for the softmax. Both products are made by D's idle warps (x is
 * kept in shared memory by A's norm, a is staged for the o-proj), so phase E and its grid
 * barrier are gone. An item is PK_RC columns of one expert's row (4 KB staged: 384 items
 * for Qwen3-30B-A3B on D's idle warps; 256 items, half of them 8 KB, made D 0.8 us longer:
 * tg128 -2.4%, bench/NOTES.md P100); its sum goes to rpart[piece][expert] (the x pieces first), summed by F in piece order (every
 * block the same logits). */
#define PK_RC 2048
static_assert(2 * PK_RC <= PK_WB, "a router piece fits a warp's staging slot");
__host__ __device__ __forceinline__ int pk_rxp(int E) { return (E + PK_RC - 1) / PK_RC; }
__host__ __device__ __forceinline__ int pk_rpieces(int E, int qdim) { return pk_rxp(E) + (qdim + PK_RC - 1) / PK_RC; }
/* item j = p * ne + e: piece p of expert e's row, of Wx for the first pk_rxp pieces (against
 * x as A read it, s.xr) and of Mr after them (against a, staged as int8 for the o-proj) */
__device__ __forceinline__ void pk_router_issue(const PArgs &a, int l, int j, uint8_t *buf) {
    const int nx = a.ne * pk_rxp(a.E), jj = j < nx ? j : j - nx, ncols = j < nx ? a.E : a.qdim;
    const __half *m = j < nx ? a.rwx + (size_t)l * a.ne * a.E : a.rmr + (size_t)l * a.ne * a.qdim;
    const int e = jj % a.ne, c0 = jj / a.ne * PK_RC;
    row_issue16<true>((const uint8_t *)(m + (size_t)e * ncols + c0), 2 * (size_t)min(PK_RC, ncols - c0), buf, true);
    cp_async_commit();
}
/* its sum over the warp (the piece landing in buf) to rpart[j] */
__device__ __forceinline__ void pk_router_item(const PArgs &a, const PSmem &s, int j, const uint8_t *buf) {
    const int lane = threadIdx.x % WARP, nx = a.ne * pk_rxp(a.E);
    const bool isx = j < nx;
    const int c0 = (isx ? j : j - nx) / a.ne * PK_RC, n = min(PK_RC, (isx ? a.E : a.qdim) - c0);
    cp_async_wait_all();
    __syncwarp();   /* the other lanes' copies */
    float acc = 0.f;
    for (int i = lane; i < n / 8; i += WARP) {   /* 8 columns: 16 bytes of the piece */
        const uint4 m = *(const uint4 *)(buf + 16 * i);
        const float2 m0 = __half22float2(*(const __half2 *)&m.x), m1 = __half22float2(*(const __half2 *)&m.y);
        const float2 m2 = __half22float2(*(const __half2 *)&m.z), m3 = __half22float2(*(const __half2 *)&m.w);
        const int c = c0 + 8 * i;
        if (isx) {
            const float4 x0 = *(const float4 *)(s.xr + c), x1 = *(const float4 *)(s.xr + c + 4);
            acc += m0.x * x0.x + m0.y * x0.y + m1.x * x0.z + m1.y * x0.w + m2.x * x1.x + m2.y * x1.y + m3.x * x1.z + m3.y * x1.w;
        } else {
            const int2 q = *(const int2 *)(s.xs + xs_at(c));
            const char4 q0 = *(const char4 *)&q.x, q1 = *(const char4 *)&q.y;
            const float t = m0.x * q0.x + m0.y * q0.y + m1.x * q0.z + m1.y * q0.w + m2.x * q1.x + m2.y * q1.y + m3.x * q1.z + m3.y * q1.w;
            acc += t * s.xds[c / 32].x;
        }
    }
    acc = warp_sum(acc);
    if (lane == 0) a.rpart[j] = acc;
    __syncwarp();   /* buf is the next item's */
}

/* The head's norm as a call (code size: see PK_FAM0). A's and F's norms (norm_xl, norm_xq)
 * are inlined: a call's saves and restores of registers go through local memory, and after
 * a barrier's acquire has invalidated L1 the restores cost an L2 trip on the phase's
 * critical path (tg128 +1.5% for each of A and F, bench/NOTES.md P100). */
__device__ __noinline__ void pk_norm(const float *x, const long long *acc, int E, float eps, float *xsf, int8_t *xs, float2 *xds, bool rows_pending) {
    norm_x(x, E, eps, xsf, xs, (float *)xds, rows_pending, true, acc);
}

/* A: RMSNorm + q/k/v. A q or k head is two blocks' (halves hf = 0, 1: the rope pairs
 * (i, i + 64) for i in [32 hf, 32 hf + 32), 4 rows a warp), so its rope needs only the
 * block's barrier and one exchange of the halves' sums of squares (pk_rope), where a head
 * spread over 32 blocks needed a counter and a re-read from L2 (two round trips after the
 * multiply; the blocks that completed a head arrived last). 72 blocks pull the 6 MB as fast
 * as 132 (bench/NOTES.md P57). v needs no rope: groups of 4 rows in the other blocks' warps,
 * written to the cache as they come. Unit u = 2 hh + hf; a block takes units in increasing
 * order, so every pair of halves is reached (no block waits on a unit that waits on it). */
static_assert(2 * PK_WARPS == PK_D / 4, "A: a warp's 2 rope pairs, 16 warps a block, cover half a head's 64 pairs");
__device__ __forceinline__ int pk_halves(const PArgs &a) { return 2 * (a.nh + a.nkv); }   /* A's units: q and k head halves */
/* Row tables computed where they are used (the phases' rows follow formulas): a table of
 * pointers indexed at run time lives in local memory, and in Nsight Compute's samples the
 * first use of each of its loads stalled like a trip to L2, at the start of F most (tg128
 * +3.3% without them on the H100, bench/NOTES.md P97). Rows in pairs: row r is
 * p + ((r & 1) + (r / 2) * gap) * rb (A's q/k rows: pairs 64 apart; v, o: consecutive). */
struct PkPairRows {
    const uint8_t *p;
    size_t rb;
    int gap;
    __device__ __forceinline__ const uint8_t *operator[](int r) const { return p + (size_t)((r & 1) + (r >> 1) * gap) * rb; }
};
/* unit u's 4 rows for this warp (rope pairs i, i + 64 of the warp's 2 pairs); seg: their weight (PW_Q or PW_K) */
__device__ __forceinline__ PkPairRows pk_head_rows(const PArgs &a, const PLayer &L, int u, int &seg) {
    const int hh = u / 2;
    seg = hh < a.nh ? PW_Q : PW_K;
    const size_t r0 = (size_t)(hh < a.nh ? hh : hh - a.nh) * PK_D + 32 * (u & 1) + 2 * (threadIdx.x / WARP);
    return PkPairRows{L.w[seg] + r0 * L.rb[seg], L.rb[seg], PK_D / 2};
}
__device__ __forceinline__ PkPairRows pk_v_rows(const PLayer &L, int vg) { return PkPairRows{L.w[PW_V] + (size_t)4 * vg * L.rb[PW_V], L.rb[PW_V], 2}; }
/* the v groups' warps: those of the blocks without a head half first (every warp when none is free) */
__device__ __forceinline__ void pk_v_warps(const PArgs &a, int gw, int &vw, int &nvw) {
    const int nu = pk_halves(a), free = (int)gridDim.x - nu;
    if (free > 0) {
        vw = (int)blockIdx.x < nu ? -1 : (int)(threadIdx.x / WARP) * free + ((int)blockIdx.x - nu);
        nvw = free * PK_WARPS;
    } else {
        vw = gw;
        nvw = (int)gridDim.x * PK_WARPS;
    }
}
/* before A (before the barrier wait): the norm weights, then the first head half's or v
 * group's rows, 4.6-6.7 KB a warp and 6 MB in all, as 4 bulk copies by lane 0 that
 * complete on the warp's mbarrier (A waits on phase l & 1: every warp arrives once a layer,
 * with 0 bytes where it has no rows). With cp.async the window stalled in the copies' issue
 * (74 KB a head block) and the barrier's poll started late: the G -> A pass 2.07 -> 1.48 us,
 * tg128 +0.7% on the H100 (bench/NOTES.md P106). */
template <int FAM> __device__ void pk_pre_qkv(const PArgs &a, const PLayer &L, const PSmem &s, int gw) {
    norm_stage_w(L.attn_norm, a.E, s.xsf);
    cp_async_commit();
    if (threadIdx.x % WARP) return;
    int vw, nvw;
    pk_v_warps(a, gw, vw, nvw);
    PkPairRows wp{nullptr, 0, 0};
    int t = -1;
    if ((int)blockIdx.x < pk_halves(a)) {
        int seg;
        wp = pk_head_rows(a, L, blockIdx.x, seg);
        t = L.t[seg];
    } else if (vw >= 0 && vw < a.kvdim / 4) {
        wp = pk_v_rows(L, vw);
        t = L.t[PW_V];
    }
    const size_t nb = t >= 0 ? pk_chunk0<FAM, 4>(t, wp.rb) : 0;   /* the first chunk, as pk_issue's, in row_issue16's layout */
    uint32_t sz[4], tot = 0;
    for (int r = 0; r < 4; r++) {
        sz[r] = nb ? 16u * (uint32_t)lines16(wp[r], nb) : 0u;
        tot += sz[r];
    }
    const uint32_t mb = (uint32_t)__cvta_generic_to_shared(s.mb + threadIdx.x / WARP);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");   /* the buffer's generic reads (G's) before the copies' writes */
    mb_expect(mb, tot);
    const uint64_t pol = l2_evict_first();
    uint8_t *buf = s.wb + (threadIdx.x / WARP) * PK_WB;
    for (int r = 0; r < 4; r++)
        if (sz[r]) bulk_g2s((uint32_t)__cvta_generic_to_shared(buf + r * PK_CAP(4)), line16(wp[r]), sz[r], mb, pol);
}
/* A's wait for the rows pk_pre_qkv asked for (layer l's window) */
__device__ __forceinline__ void pk_qkv_landed(const PSmem &s, int l) {
    mb_wait((uint32_t)__cvta_generic_to_shared(s.mb + threadIdx.x / WARP), (uint32_t)l & 1u);
}
template <int FAM> __device__ void pk_qkv(const PArgs &a, const PLayer &L, const PSmem &s, int l, int pos, int gw, int NW) {
    cp_async_wait_all();   /* the thread's own copies of the norm's weights (the rows are bulk copies: pk_qkv_landed) */
    norm_xl(l ? a.h2 : a.x, l ? a.acc : nullptr, a.E, a.eps, s.xsf, s.xs, s.xds, s.xr);
    pk_mark(a, l, 6);
    const int lane = threadIdx.x % WARP, nu = pk_halves(a);
    uint8_t *buf = s.wb + (threadIdx.x / WARP) * PK_WB;
    float *res = s.res + (threadIdx.x / WARP) * PK_MAXK;
    for (int u = blockIdx.x; u < nu; u += gridDim.x) {
        int seg;
        const PkPairRows wt = pk_head_rows(a, L, u, seg);
        /* here as a local table: computed on use, the kernel's allocation spilled 16 bytes
         * (the same speed on the H100, bench/NOTES.md P97) */
        const uint8_t *wp[4] = {wt[0], wt[1], wt[2], wt[3]};
        const bool first = u == (int)blockIdx.x;
        if (first) pk_qkv_landed(s, l);
        pk_rows<FAM, 4, PK_W>(L.t[seg], wp, 0xFu, L.rb[seg], a.E, s.xs, s.xds, res, buf, first, first ? pk_stamp(a, l, 10) : nullptr);
        if (first) pk_mark(a, l, 7);
        __syncthreads();
        if (threadIdx.x < WARP) pk_rope(a, L, u / 2, u & 1, pos, s.res);
        if (u + (int)gridDim.x < nu || (int)gridDim.x <= nu) __syncthreads();   /* s.res is the next unit's, or the v groups' below */
    }
    int vw, nvw;
    pk_v_warps(a, gw, vw, nvw);
    for (int vg = vw; vg >= 0 && vg < a.kvdim / 4; vg += nvw) {
        if (vg == vw && (int)blockIdx.x >= nu) pk_qkv_landed(s, l);
        pk_rows<FAM, 4, PK_W>(L.t[PW_V], pk_v_rows(L, vg), 0xFu, L.rb[PW_V], a.E, s.xs, s.xds, res, buf, vg == vw && (int)blockIdx.x >= nu);
        if (lane < 4) L.vc[(size_t)pos * a.kvdim + 4 * vg + lane] = __float2half(res[lane]);
        pk_kv_done(a, 4 * vg / PK_D);
    }
}

/* How a step's attention runs: a k_persist of its own per mode (the host picks the step's
 * graph by its position), so that one mode's code leaves the other's as it was. Both take
 * block items (pk_attn_item, pk_attn_one: K and V staged whole, tensor-core products), which replaced
 * 4-warp items of 2 heads whose steps of 4 positions each waited a round trip (at depth
 * 8192 phase B took 33 us a layer, now 5; bench/NOTES.md P71).
 * AM_ONE (pos < PK_DSUB): an item per (KV head, group of PK_DHB query heads) over all
 *   positions, which writes the heads' outputs itself: no chunk merge, no phase C.
 * AM_CHUNKED (from pk_chunked on): items per chunk, then C merges the chunks. */
enum { AM_CHUNKED, AM_ONE };
/* The step's chunking of positions [0, pos]: ch positions a chunk, nchv chunks. AM_CHUNKED:
 * as many chunks as fill the grid in one round while a chunk fits PK_DSUB staged positions
 * (more rounds past that), and no more than the partials' a.nch. */
__device__ __forceinline__ int pk_dgroups(const PArgs &a) { return a.nkv * ((a.nh / a.nkv + PK_DHB - 1) / PK_DHB); }
template <int AM> __device__ __forceinline__ void pk_chunks(const PArgs &a, int pos, int &ch, int &nchv) {
    if constexpr (AM == AM_ONE) {
        ch = pos + 1;
        nchv = 1;
    } else {
        const int n = pos + 1, per = max(1, (int)gridDim.x / pk_dgroups(a));
        ch = min(PK_DSUB, (max((n + per - 1) / per, (n + a.nch - 1) / a.nch) + 15) & ~15);
        nchv = (n + ch - 1) / ch;
    }
}

/* B, one item a block: K and V of up to PK_DSUB positions of one KV head staged
 * whole (cp.async, every copy in flight at once: one round trip where 4-warp items took one
 * per 16 positions), then S^T = K Q^T and O^T = V^T P^T on the tensor cores (f16 in, f32
 * sums; mma m16n8k16, the 8 query heads of the group as n). Moves the chunk's K/V rows
 * (256 bytes each) once from L2/HBM for all 8 heads, where the 2-head items read them 4
 * times. Shared layout (the warps' slots): K, V [PK_DSUB][PK_D + 8] f16 (the 16-byte pad
 * keeps ldmatrix's 8 rows in distinct banks), q [PK_DHB][PK_D + 8] f16, S [PK_DHB][PK_DSUB]
 * f32 (later the PV halves' sum), P [PK_DHB][PK_DSUB + 8] f16, and each head's max / sum. */
#define PK_KP (PK_D + 8)
#define PK_PP (PK_DSUB + 8)
static_assert(2 * PK_DSUB * PK_KP * 2 + PK_DHB * PK_KP * 2 + PK_DHB * PK_DSUB * 4 + PK_DHB * PK_PP * 2 + 2 * PK_DHB * 4 <= PK_WARPS * PK_WB,
              "attention items: their staging must fit the warps' slots");
static_assert(PK_DHB == 8 && PK_D == 128 && PK_WARPS == 16, "attention items: mma n = 8 heads, 8 d-tiles x 2 position halves on 16 warps");
__device__ __forceinline__ __half *pk_ks(const PSmem &s) { return (__half *)s.wb; }
__device__ __forceinline__ __half *pk_vs(const PSmem &s) { return (__half *)s.wb + PK_DSUB * PK_KP; }
/* rows [r0, r1) of chunk t0's K and V into the staging (16-byte pieces, all threads); EF
 * (AM_CHUNKED: a step reads 17 MB of them a layer at depth 8192, none again before the next
 * step) marks them to leave L2 first, as the weight rows are */
template <bool EF>
__device__ __forceinline__ void pk_item_issue(const PArgs &a, const PLayer &L, const PSmem &s, int kvh, int t0, int r0, int r1, int pos) {
    __half *ks = pk_ks(s), *vs = pk_vs(s);
    const uint64_t pol = EF ? l2_evict_first() : 0;
    for (int i = r0 * 32 + threadIdx.x; i < r1 * 32; i += blockDim.x) {   /* 16 pieces of K, then 16 of V, a row */
        const int r = i / 32, k = i % 32, kv = k / 16, pc = k % 16;
        if (!kv && t0 + r == pos) continue;   /* the step's own k: pk_item_q_pad normalizes it */
        const __half *src = (kv ? L.vc : L.kc) + (size_t)(t0 + r) * a.kvdim + kvh * PK_D + 8 * pc;
        __half *dst = (kv ? vs : ks) + r * PK_KP + 8 * pc;
        if (EF) cp_async16_hint((unsigned)__cvta_generic_to_shared(dst), src, pol);
        else cp_async16(dst, src);
    }
}
__device__ __forceinline__ void ldsm_x4(const void *p, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"((unsigned)__cvta_generic_to_shared(p)));
}
__device__ __forceinline__ void ldsm_x4_t(const void *p, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"((unsigned)__cvta_generic_to_shared(p)));
}
__device__ __forceinline__ void mma16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
/* Both items, while their K/V copies fly: V's pad rows [n, n16) zeroed (P is 0 there, and
 * 0 x a stale NaN would not be), and the heads' q (f32, rotated, from A) staged as f16
 * times its head's 1 / rms (which pk_rope left out) and the softmax scale, heads past nhb
 * zero. Where the item holds the step's own position (row kr of its staging, kr < n), also
 * that k row, normalized likewise: staged, and written to the cache for the later steps
 * (the same value from every item that holds it). One float4 a thread, q's and k's on
 * different threads: one round trip. */
static_assert(PK_THREADS >= PK_DHB * PK_D / 4 + PK_D / 4, "q and the step's k row on different threads");
__device__ __forceinline__ void pk_item_q_pad(const PArgs &a, const PLayer &L, const PSmem &s, int kvh, int h0, int nhb, int n, int n16, int kr, int pos) {
    __half *ks = pk_ks(s), *vs = pk_vs(s), *qs = vs + PK_DSUB * PK_KP;
    for (int i = threadIdx.x; i < (n16 - n) * PK_D; i += blockDim.x) vs[(n + i / PK_D) * PK_KP + i % PK_D] = __float2half(0.f);
    const int t = threadIdx.x - PK_DHB * PK_D / 4;
    if (t < 0) {
        const int j = threadIdx.x / (PK_D / 4), d = 4 * (threadIdx.x % (PK_D / 4));
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        float sc = 0.f;
        if (j < nhb) {
            v = __ldcg((const float4 *)(a.qkv + (size_t)(h0 + j) * PK_D + d));
            sc = pk_head_rs(a, h0 + j) * a.scale;
        }
        __half2 *q2 = (__half2 *)(qs + j * PK_KP + d);
        q2[0] = __floats2half2_rn(v.x * sc, v.y * sc);
        q2[1] = __floats2half2_rn(v.z * sc, v.w * sc);
    } else if (t < PK_D / 4 && kr < n) {
        const float4 v = __ldcg((const float4 *)(a.qkv + (size_t)(a.nh + kvh) * PK_D + 4 * t));
        const float sc = pk_head_rs(a, a.nh + kvh);
        const __half2 k01 = __floats2half2_rn(v.x * sc, v.y * sc), k23 = __floats2half2_rn(v.z * sc, v.w * sc);
        __half2 *kd = (__half2 *)(ks + kr * PK_KP + 4 * t), *cd = (__half2 *)(L.kc + (size_t)pos * a.kvdim + kvh * PK_D + 4 * t);
        kd[0] = k01;
        kd[1] = k23;
        cd[0] = k01;
        cd[1] = k23;
    }
}
/* AM_CHUNKED's item: query heads h0 .. h0 + nhb - 1 against positions [t0, t1) of KV head
 * kvh, whose rows [t0, pre) were issued already (the barrier window); writes each head's
 * partial (acc[D], max, sum) as attn_part does, for C to merge. */
__device__ void pk_attn_item(const PArgs &a, const PLayer &L, const PSmem &s, int kvh, int h0, int nhb, int t0, int t1, int pre, int pos, float *pp,
                             size_t pstride) {
    const int n = t1 - t0, n16 = (n + 15) & ~15, warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, g = lane / 4, tq = lane % 4;
    __half *ks = pk_ks(s), *vs = pk_vs(s), *qs = vs + PK_DSUB * PK_KP;
    float *S = (float *)(qs + PK_DHB * PK_KP);
    __half *P = (__half *)(S + PK_DHB * PK_DSUB);
    float *mx = (float *)(P + PK_DHB * PK_PP), *sum = mx + PK_DHB;
    pk_item_issue<true>(a, L, s, kvh, t0, pre - t0, n, pos);
    cp_async_commit();
    pk_item_q_pad(a, L, s, kvh, h0, nhb, n, n16, pos - t0, pos);
    cp_async_wait_all();
    __syncthreads();
    /* S^T tile (16 positions x 8 heads) a warp: A = K rows, B = q (n = head, k = d) */
    for (int tt = warp; tt < n16 / 16; tt += PK_WARPS) {
        float c[4] = {0.f, 0.f, 0.f, 0.f};
        const int mi = lane / 8;
#pragma unroll
        for (int kk = 0; kk < PK_D / 16; kk += 2) {   /* two k-steps a B load */
            uint32_t a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3;
            ldsm_x4(ks + (16 * tt + (lane % 8) + 8 * (mi & 1)) * PK_KP + 16 * kk + 8 * (mi >> 1), a0, a1, a2, a3);
            ldsm_x4(ks + (16 * tt + (lane % 8) + 8 * (mi & 1)) * PK_KP + 16 * kk + 16 + 8 * (mi >> 1), a4, a5, a6, a7);
            ldsm_x4(qs + (lane % 8) * PK_KP + 16 * kk + 8 * mi, b0, b1, b2, b3);
            mma16816(c, a0, a1, a2, a3, b0, b1);
            mma16816(c, a4, a5, a6, a7, b2, b3);
        }
        S[(2 * tq) * PK_DSUB + 16 * tt + g] = c[0];
        S[(2 * tq + 1) * PK_DSUB + 16 * tt + g] = c[1];
        S[(2 * tq) * PK_DSUB + 16 * tt + g + 8] = c[2];
        S[(2 * tq + 1) * PK_DSUB + 16 * tt + g + 8] = c[3];
    }
    __syncthreads();
    /* softmax a head a warp: max, exp, sum over the valid positions; P in f16 (0 past them) */
    if (warp < PK_DHB) {
        float m = -INFINITY;
        for (int t = lane; t < n; t += WARP) m = fmaxf(m, S[warp * PK_DSUB + t]);
        m = warp_max(m);
        float l = 0.f;
        for (int t = lane; t < n16; t += WARP) {
            const __half p = __float2half(t < n ? expf(S[warp * PK_DSUB + t] - m) : 0.f);
            l += __half2float(p);   /* the sum of the f16 weights V is multiplied by */
            P[warp * PK_PP + t] = p;
        }
        l = warp_sum(l);
        if (lane == 0) { mx[warp] = m; sum[warp] = l; }
    }
    __syncthreads();
    /* O^T tile (16 dims x 8 heads) a warp and half of the positions: A = V^T (ldmatrix.trans
     * of V rows), B = P (n = head, k = position) */
    const int dt = warp % 8, half = warp / 8, kh = (n16 / 16 + 1) / 2;   /* k-steps in the first half */
    float c[4] = {0.f, 0.f, 0.f, 0.f};
    {
        const int mi = lane / 8;
        for (int kk = half * kh; kk < (half ? n16 / 16 : kh); kk++) {
            uint32_t a0, a1, a2, a3, b0, b1, b2, b3;
            ldsm_x4_t(vs + (16 * kk + (lane % 8) + 8 * (mi >> 1)) * PK_KP + 16 * dt + 8 * (mi & 1), a0, a1, a2, a3);
            ldsm_x4(P + (lane % 8) * PK_PP + 16 * kk + 8 * (mi & 1), b0, b1, b2, b3);   /* b2, b3 repeat b0, b1 */
            mma16816(c, a0, a1, a2, a3, b0, b1);
        }
    }
    float *O = S;   /* S is free: the second half's tiles, [head][d] */
    if (half) {
        O[(2 * tq) * PK_D + 16 * dt + g] = c[0];
        O[(2 * tq + 1) * PK_D + 16 * dt + g] = c[1];
        O[(2 * tq) * PK_D + 16 * dt + g + 8] = c[2];
        O[(2 * tq + 1) * PK_D + 16 * dt + g + 8] = c[3];
    }
    __syncthreads();
    const int hj[4] = {2 * tq, 2 * tq + 1, 2 * tq, 2 * tq + 1}, dj[4] = {16 * dt + g, 16 * dt + g, 16 * dt + g + 8, 16 * dt + g + 8};
    if (!half)
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (hj[i] < nhb) pp[(size_t)hj[i] * pstride + dj[i]] = c[i] + O[hj[i] * PK_D + dj[i]];
    if (threadIdx.x < nhb) {
        pp[(size_t)threadIdx.x * pstride + PK_D] = mx[threadIdx.x];
        pp[(size_t)threadIdx.x * pstride + PK_D + 1] = sum[threadIdx.x];
    }
    __syncthreads();   /* the staging is free for the next item */
}
/* AM_ONE's item: query heads h0 .. h0 + nhb - 1 against every position [0, n) of KV head
 * kvh (rows [0, pre) issued in the barrier window), written as the heads' int8 outputs. A
 * warp takes 16 positions through both products in registers: S = Q K^T with the heads as
 * the mma's rows (8 of its 16), so that S's accumulators are already P's A fragments
 * (FlashAttention-2's layout), and one exchange of the warps' maxes gives every warp the
 * block's max per head; each warp's f32 P V goes over K's staging (K is read by then), and
 * every thread sums two outputs over the warps' parts, a half-warp quantizing a group of 32.
 * Four block barriers where the item with S and P in shared memory took six, and no chain
 * of dependent shared loads or shuffles longer than one step needs: with 128 blocks
 * waiting on these 4, such chains were B's time (bench/NOTES.md P77-P79). */
#define PK_OP (PK_D + 8)   /* a warp's partial O, per head: the pad spreads the 8 heads' rows over the banks */
static_assert(PK_WARPS * PK_DHB * PK_OP * 4 <= PK_DSUB * PK_KP * 2, "AM_ONE: the warps' partial O must fit over K's staging");
static_assert(PK_DSUB == 16 * PK_WARPS, "AM_ONE: a warp a tile of 16 positions");
__device__ void pk_attn_one(const PArgs &a, const PLayer &L, const PSmem &s, int l, int kvh, int h0, int nhb, int n, int pre) {
    const int nw = (n + 15) / 16, warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, g = lane / 4, tq = lane % 4, p0 = 16 * warp;
    __half *ks = pk_ks(s), *vs = pk_vs(s), *qs = vs + PK_DSUB * PK_KP;
    float *mw = (float *)(qs + PK_DHB * PK_KP), *lw = mw + PK_WARPS * PK_DHB;   /* [warp][head] */
    float *O = (float *)ks;                                                     /* [warp][head][PK_OP] */
    pk_item_issue<false>(a, L, s, kvh, 0, pre, n, n - 1);
    cp_async_commit();
    pk_item_q_pad(a, L, s, kvh, h0, nhb, n, 16 * nw, n - 1, n - 1);
    pk_mark(a, l, 12, gridDim.x - 1);   /* the block of item 0 (pk_ib) */
    cp_async_wait_all();
    __syncthreads();
    pk_mark(a, l, 13, gridDim.x - 1);
    float c0[4] = {0.f, 0.f, 0.f, 0.f}, c1[4] = {0.f, 0.f, 0.f, 0.f};   /* positions p0 + 2tq (+1), p0 + 8 + 2tq (+1); head g */
    const int pp[4] = {p0 + 2 * tq, p0 + 2 * tq + 1, p0 + 8 + 2 * tq, p0 + 9 + 2 * tq};
    if (warp < nw) {
        float e0[4] = {0.f, 0.f, 0.f, 0.f}, e1[4] = {0.f, 0.f, 0.f, 0.f};   /* the odd k-steps: two chains of mma, not one */
#pragma unroll
        for (int kk = 0; kk < PK_D / 16; kk += 2) {   /* two k-steps a q load */
            uint32_t q0, q1, q2, q3, k0, k1, k2, k3, k4, k5, k6, k7;
            ldsm_x4(qs + (lane % 8) * PK_KP + 16 * kk + 8 * (lane / 8), q0, q1, q2, q3);
            const __half *kr = ks + (p0 + lane % 8 + 8 * (lane / 16)) * PK_KP + 16 * kk + 8 * (lane / 8 % 2);
            ldsm_x4(kr, k0, k1, k2, k3);
            ldsm_x4(kr + 16, k4, k5, k6, k7);
            mma16816(c0, q0, 0u, q1, 0u, k0, k1);
            mma16816(c1, q0, 0u, q1, 0u, k2, k3);
            mma16816(e0, q2, 0u, q3, 0u, k4, k5);
            mma16816(e1, q2, 0u, q3, 0u, k6, k7);
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            c0[i] += e0[i];
            c1[i] += e1[i];
        }
        const float sv[4] = {c0[0], c0[1], c1[0], c1[1]};
        float m = -INFINITY;
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (pp[i] < n) m = fmaxf(m, sv[i]);
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        if (tq == 0) mw[warp * PK_DHB + g] = m;
    }
    __syncthreads();
    pk_mark(a, l, 14, gridDim.x - 1);
    if (warp < nw) {
        float M = -INFINITY;   /* the lanes of head g read a quarter of the warps' maxes each, at once */
#pragma unroll
        for (int w = tq; w < PK_WARPS; w += 4)
            if (w < nw) M = fmaxf(M, mw[w * PK_DHB + g]);
        M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 1));
        M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 2));
        const float sv[4] = {c0[0], c0[1], c1[0], c1[1]};
        __half p[4];
        float ls = 0.f;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            p[i] = __float2half(pp[i] < n ? expf(sv[i] - M) : 0.f);
            ls += __half2float(p[i]);   /* the sum of the f16 weights V is multiplied by */
        }
        ls += __shfl_xor_sync(0xffffffffu, ls, 1);
        ls += __shfl_xor_sync(0xffffffffu, ls, 2);
        if (tq == 0) lw[warp * PK_DHB + g] = ls;
        const __half2 pa = __halves2half2(p[0], p[1]), pb = __halves2half2(p[2], p[3]);
        const uint32_t a0 = *(const uint32_t *)&pa, a2 = *(const uint32_t *)&pb;
        float *Ow = O + (size_t)(warp * PK_DHB + g) * PK_OP + 2 * tq;
        const __half *vr = vs + (p0 + lane % 8 + 8 * (lane / 8 % 2)) * PK_KP + 8 * (lane / 16);
#pragma unroll
        for (int j = 0; j < PK_D / 8; j += 2) {   /* two n-tiles of 8 dims a V load */
            uint32_t v0, v1, v2, v3;
            ldsm_x4_t(vr + 8 * j, v0, v1, v2, v3);
            float d0[4] = {0.f, 0.f, 0.f, 0.f}, d1[4] = {0.f, 0.f, 0.f, 0.f};
            mma16816(d0, a0, 0u, a2, 0u, v0, v1);
            mma16816(d1, a0, 0u, a2, 0u, v2, v3);
            *(float2 *)(Ow + 8 * j) = make_float2(d0[0], d0[1]);
            *(float2 *)(Ow + 8 * j + 8) = make_float2(d1[0], d1[1]);
        }
    }
    __syncthreads();
    pk_mark(a, l, 15, gridDim.x - 1);
    /* two outputs a thread, a group of 32 a half-warp: every warp's share in one pass */
    if (threadIdx.x < nhb * PK_D / 2) {
        const int j = threadIdx.x / (PK_D / 2), d = 2 * (threadIdx.x % (PK_D / 2));
        float2 v = make_float2(0.f, 0.f);
        float ls = 0.f;
#pragma unroll
        for (int w = 0; w < PK_WARPS; w++)   /* unrolled: the loads in flight together */
            if (w < nw) {
                const float2 o = *(const float2 *)(O + (size_t)(w * PK_DHB + j) * PK_OP + d);
                v.x += o.x;
                v.y += o.y;
                ls += lw[w * PK_DHB + j];
            }
        v.x /= ls;
        v.y /= ls;
        float amax = fmaxf(fabsf(v.x), fabsf(v.y));
#pragma unroll
        for (int o = 1; o < 16; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const int8_t b0 = quant_q8(v.x, amax), b1 = quant_q8(v.y, amax);
        int sum = (int)b0 + b1;
#pragma unroll
        for (int o = 1; o < 16; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        const int oi = (h0 + j) * PK_D + d;
        *(char2 *)(a.aq + oi) = make_char2(b0, b1);
        if (lane % 16 == 0) ((float2 *)a.ad)[oi / 32] = make_float2(amax / 127.f, amax / 127.f * (float)sum);
    }
    __syncthreads();   /* the staging is free for the next item */
}
/* item it's KV head, query heads and positions */
__device__ __forceinline__ void pk_item_of(const PArgs &a, int it, int nchv, int ch, int pos, int &kvh, int &h0, int &nhb, int &t0, int &t1) {
    const int G = a.nh / a.nkv, ng = (G + PK_DHB - 1) / PK_DHB, c = it % nchv, hg = it / nchv % ng;
    kvh = it / nchv / ng;
    h0 = kvh * G + hg * PK_DHB;
    nhb = min(PK_DHB, G - hg * PK_DHB);
    t0 = c * ch;
    t1 = min(t0 + ch, pos + 1);
}

/* The block's place in B's round of items, from the grid's end: the blocks there have no
 * q or k head half (pk_v_warps), finish A first and ask for their item's K and V rows
 * while the halves are made (tg128 +1.3% over items from block 0 on the H100,
 * bench/NOTES.md P93). */
__device__ __forceinline__ int pk_ib() { return (int)gridDim.x - 1 - (int)blockIdx.x; }
/* B: attention by block items (pk_attn_one or pk_attn_item), round the blocks. */
template <int AM> __device__ void pk_attn(const PArgs &a, const PLayer &L, const PSmem &s, int l, int pos) {
    int ch, nchv;
    pk_chunks<AM>(a, pos, ch, nchv);
    const int items = pk_dgroups(a) * nchv;
    for (int it = pk_ib(); it < items; it += gridDim.x) {
        int kvh, h0, nhb, t0, t1;
        pk_item_of(a, it, nchv, ch, pos, kvh, h0, nhb, t0, t1);
        const int pre = it == pk_ib() ? min(t1, pos) : t0;   /* the first item's earlier rows were asked for after A */
        pk_kv_wait(a, kvh, l);
        if constexpr (AM == AM_ONE) pk_attn_one(a, L, s, l, kvh, h0, nhb, t1, max(pre, t0));
        else
            pk_attn_item(a, L, s, kvh, h0, nhb, t0, t1, max(pre, t0), pos, a.part + ((size_t)h0 * a.nch + it % nchv) * (PK_D + 2),
                         (size_t)a.nch * (PK_D + 2));
    }
}

/* Before B (while its KV head's q, k and v are still being made): the block's first
 * item's rows of earlier positions (the step's own is written in A) straight into its
 * staging. */
template <int AM> __device__ void pk_pf_attn(const PArgs &a, const PLayer &L, const PSmem &s, int pos) {
    int ch, nchv;
    pk_chunks<AM>(a, pos, ch, nchv);
    if (pk_ib() < pk_dgroups(a) * nchv) {
        int kvh, h0, nhb, t0, t1;
        pk_item_of(a, pk_ib(), nchv, ch, pos, kvh, h0, nhb, t0, t1);
        pk_item_issue<AM == AM_CHUNKED>(a, L, s, kvh, t0, 0, min(t1, pos) - t0, pos);
        cp_async_commit();
    }
}

/* C: merge the chunks of each head, a block a head: each quarter merges a quarter of the
 * chunks with all its loads in flight at once (up to 12 chunks: one round trip at depth
 * 8192's 33), the quarters' sums combined in shared memory; int8 output with a scale per 32. */
#define PK_CPRE 12
template <int AM> __device__ void pk_comb(const PArgs &a, const PSmem &s, int pos) {
    const int D = PK_D, quad = threadIdx.x / 128, d = threadIdx.x % 128;
    int ch, nchv;
    pk_chunks<AM>(a, pos, ch, nchv);
    float *acc = (float *)s.wb, *qm = acc + 4 * D, *ql = qm + 4;   /* [4][D] sums, [4] maxes, [4] sums of weights */
    for (int h = blockIdx.x; h < a.nh; h += gridDim.x) {
        const int c0 = quad * nchv / 4, c1 = (quad + 1) * nchv / 4;
        float M, L;
        acc[quad * D + d] = attn_merge_acc<PK_CPRE>(a.part + ((size_t)h * a.nch + c0) * (D + 2), c1 - c0, D, d, M, L);
        if (d == 0) { qm[quad] = M; ql[quad] = L; }
        __syncthreads();
        if (quad == 0) {
            float Mx = -INFINITY;
            for (int q = 0; q < 4; q++) Mx = fmaxf(Mx, qm[q]);
            float v = 0.f, l = 0.f;
            for (int q = 0; q < 4; q++) {
                const float f = qm[q] == -INFINITY ? 0.f : expf(qm[q] - Mx);   /* a quarter with no chunk (fewer than 4) */
                v += acc[q * D + d] * f;
                l += ql[q] * f;
            }
            warp_quant2(v / l, a.aq + h * D + (d & ~31), (float2 *)a.ad + (h * D + d) / 32);
        }
        __syncthreads();
    }
}

/* D: o-proj (pairs of output rows) into h2 = x + W_o a, then the router's pieces (above) on
 * the warps past the pairs: one work list, so small grids loop over both. x is A's copy in
 * shared memory; D zeroes acc (and its rows' F adds into it after the barrier to F). */
__device__ __forceinline__ PkPairRows pk_o_rows(const PLayer &L, int g) { return PkPairRows{L.w[PW_O] + (size_t)2 * g * L.rb[PW_O], L.rb[PW_O], 2}; }
__device__ __forceinline__ unsigned pk_o_ok(const PArgs &a, int g) { return 2 * g + 1 < a.E ? 3u : 1u; }
template <int FAM> __device__ void pk_pre_o(const PArgs &a, const PLayer &L, const PSmem &s, int l, int gw) {
    const int no = (a.E + 1) / 2;
    uint8_t *buf = s.wb + (threadIdx.x / WARP) * PK_WB;
    if (gw < no) pk_issue<FAM, 2>(L.t[PW_O], pk_o_rows(L, gw), pk_o_ok(a, gw), L.rb[PW_O], buf);
    else if (gw < no + a.ne * pk_rpieces(a.E, a.qdim)) pk_router_issue(a, l, gw - no, buf);
}
template <int FAM> __device__ void pk_oproj(const PArgs &a, const PLayer &L, const PSmem &s, int l, int gw, int NW) {
    const int lane = threadIdx.x % WARP, no = (a.E + 1) / 2, nr = a.ne * pk_rpieces(a.E, a.qdim);
    stage_x(a.aq, a.ad, xq_pad(a.qdim), s.xs, (float *)s.xds, threadIdx.x, blockDim.x, true);
    __syncthreads();
    uint8_t *buf = s.wb + (threadIdx.x / WARP) * PK_WB;
    float ss = 0.f;   /* lane 0: the squares of the h2 rows it writes, for F's norm */
    int g = gw;
    for (; g < no; g += NW) {
        const PkPairRows wp = pk_o_rows(L, g);
        const unsigned ok = pk_o_ok(a, g);
        float *res = s.res + (threadIdx.x / WARP) * PK_MAXK;
        pk_rows<FAM, 2, PK_W>(L.t[PW_O], wp, ok, L.rb[PW_O], a.qdim, s.xs, s.xds, res, buf, g == gw);
        if (lane == 0) {   /* the residual: x as A's norm read it (s.xr); F adds to acc from zero */
            const float h0 = s.xr[2 * g] + res[0];
            a.h2[2 * g] = h0;
            a.acc[2 * g] = 0;
            ss += h0 * h0;
            if (ok & 2u) {
                const float h1 = s.xr[2 * g + 1] + res[1];
                a.h2[2 * g + 1] = h1;
                a.acc[2 * g + 1] = 0;
                ss += h1 * h1;
            }
        }
    }
    if (lane == 0) s.res[(threadIdx.x / WARP) * PK_MAXK] = ss;   /* for pk_arrive's partial */
    for (; g < no + nr; g += NW) {   /* the same list on: the router's items */
        if (g != gw) pk_router_issue(a, l, g - no, buf);
        pk_router_item(a, s, g - no, buf);
    }
}

/* before F (in D's barrier window): the FFN norm's weights, for F's norm of h2 */
__device__ void pk_pre_ffn(const PArgs &a, const PLayer &L, const PSmem &s) {
    norm_stage_w(L.ffn_norm, a.E, s.xsf);
    cp_async_commit();
}

/* F, first: the top-k in every block (the same inputs, the same order: the same choice in
 * every block), into s.sel (and pk_topk_w's weights into s.selw): descending logit, ties to the lower id (the softmax
 * is monotonic: router_topk_sp's order but for logits whose probabilities round equal).
 * An expert's rank among the others is counted in PK_RQ parts at once (a chain of ne
 * dependent shared loads per thread was the top-k's longest step), on 64-bit keys (the
 * logit's order, then the id: argmax_key) so that "above" is one unsigned compare instead
 * of a float compare, an equality and an id compare (ranks 1.08 -> 0.74 us a layer, tg128
 * +1.9% on the H100, bench/NOTES.md P86); the keys are distinct, so every rank is taken
 * once. No softmax over all experts on this path: the renormalized weights need only the
 * K chosen logits (exp(l - max) / their sum; the max is the first choice's logit), and the
 * probabilities recorded for --parity come later, off it (pk_rec_p). The warp buffers are
 * free here (F's rows are issued after it): the keys and partial ranks live there.
 * Thread e brings expert e's folded logit z (the pieces summed; ne <= the block's threads:
 * persist_setup): the order of rs z, for any rs > 0. */
#define PK_RQ 4
#define PK_RPMAX 8   /* router pieces (pk_rpieces) F stages for its top-k; persist_setup checks */
static_assert(PK_RPMAX * PK_THREADS * 4 + PK_THREADS * (8 + 4 * PK_RQ) <= PK_WARPS * PK_WB, "F: the router's pieces beside the top-k's keys and ranks");
__device__ void pk_topk(const PArgs &a, const PSmem &s, int l, float z, int &top) {
    const int t = threadIdx.x, ne = a.ne;
    unsigned long long *kk = (unsigned long long *)s.wb;   /* per expert: its logit's order and id in one key (argmax_key) */
    int *rk = (int *)(kk + ne);
    const int fon = __ldcg(a.force_on);
    if (t < ne) {
        s.lg[t] = z;
        kk[t] = argmax_key(z + 0.f, t);   /* + 0: -0 as +0, equal as compared (a tie to the lower id) */
    }
    __syncthreads();
    pk_mark(a, l, 0);
    for (int i = t; i < ne * PK_RQ; i += blockDim.x) {
        /* expert e's rank in part q: the others above it (a higher logit, or an equal one with a
         * lower id) are the keys above its key, one 64-bit compare each */
        const int e = i % ne, q = i / ne, o0 = q * ne / PK_RQ, o1 = (q + 1) * ne / PK_RQ;
        const unsigned long long p = kk[e];
        int n = 0;
        if (ne % (2 * PK_RQ) == 0) {   /* 16-byte broadcast loads, all in flight at once */
            const ulonglong2 *p2 = (const ulonglong2 *)(kk + o0);
#pragma unroll 16
            for (int o = 0; o < (o1 - o0) / 2; o++) {
                const ulonglong2 v = p2[o];
                n += (v.x > p) + (v.y > p);
            }
        } else {
            for (int o = o0; o < o1; o++) n += kk[o] > p;
        }
        rk[i] = n;
    }
    __syncthreads();
    pk_mark(a, l, 1);
    for (int e = t; e < ne; e += blockDim.x) {
        int rank = 0;
        for (int q = 0; q < PK_RQ; q++) rank += rk[q * ne + e];
        if (rank < a.K) {
            s.sel[rank] = e;
            if (blockIdx.x == 0) a.rec[(size_t)l * a.K + rank] = e;
        }
    }
    __syncthreads();
    /* --parity's forced experts replace the choice (weighted by this router: pk_topk_w);
     * top: the router's own first choice, whose logit is the softmax's max */
    if (t < WARP) {
        top = s.sel[0];   /* warp 0's (pk_topk_w's): read before its lanes write s.sel */
        const int e = t < a.K ? (fon ? a.force[(size_t)l * a.K + t] : s.sel[t]) : 0;
        __syncwarp();   /* every lane has read s.sel before any writes it */
        if (t < a.K) s.sel[t] = e;
    }
    __syncthreads();
}
/* The weights, once F's norm has rs: the logits rs z (as the router's: pk_rec_p's
 * probabilities too), renormalized over the K. Lane k of warp 0 takes choice k's weight,
 * their sum by shuffles (where each lane summing all K in turn was a chain of 2K dependent
 * shared loads). */
__device__ void pk_topk_w(const PArgs &a, const PSmem &s, float rs, int top) {
    const int t = threadIdx.x;
    for (int e = t; e < a.ne; e += blockDim.x) s.lg[e] *= rs;
    __syncthreads();
    static_assert(PK_MAXK == 8, "the top-k's weight sum: 3 shuffle steps over 8 lanes");
    if (t < WARP) {
        const float mx = s.lg[top];
        const float w = t < a.K ? expf(s.lg[s.sel[t]] - mx) : 0.f;
        float tot = w;
#pragma unroll
        for (int o = 1; o < PK_MAXK; o <<= 1) tot += __shfl_xor_sync(0xffffffffu, tot, o);
        if (t < a.K) s.selw[t] = w / tot;
    }
    __syncthreads();
}
/* The router's probabilities of its choice, for --parity (block 0, one warp, in the barrier
 * window after F, where the logits are still in s.lg and no longer needed: softmax_warp
 * turns them into probabilities in place). */
__device__ void pk_rec_p(const PArgs &a, const PSmem &s, int l) {
    const int lane = threadIdx.x % WARP;
    softmax_warp(s.lg, a.ne);
    __syncwarp();
    if (lane < a.K) a.recp[(size_t)l * a.K + lane] = s.lg[a.rec[(size_t)l * a.K + lane]];
}

/* ----------------------------------------------------------------------
 * The experts' down weights as column slabs (F and G fused, bench/NOTES.md P107).
 * G's rows need every expert's whole h, so a grid barrier sat between gate/up and down,
 * and G re-read h from L2 behind it (F -> G pass + G: ~7.7 us a layer of 32 on the H100).
 * Split over the FFN width instead, a block that made 64 values of one expert's h (its
 * 16 warps' gate/up rows) multiplies them at once by the same 64 columns of that expert's
 * down weight, all E rows, and adds the products into x: no barrier, no re-read. Those
 * columns are scattered through the GGUF rows (and a Q6_K superblock's 64-value quarters
 * share bytes), so persist_setup repacks each down weight once into slabs: per (expert,
 * 64-column chunk) its E rows of one small record each, contiguous, which a warp fetches as
 * one bulk copy. The same values exactly (a lossless re-layout), in 40 (Q4_K), 56 (Q6_K),
 * 68 (Q8_0) or 36 (Q4_0) bytes a row. The cost is a second copy of the down weights in
 * device memory (7.3 GB, 6.8 GiB, for Qwen3-30B-A3B Q4_K_M; prefill still reads the GGUF layout):
 * where it does not fit, persist_setup leaves decode on the kernel graph. */
__host__ __device__ constexpr int slab_cb(int t) {
    return t == GGML_TYPE_Q4_K ? 40 : t == GGML_TYPE_Q6_K ? 56 : t == GGML_TYPE_Q8_0 ? 68 : t == GGML_TYPE_Q4_0 ? 36 : 0;
}
/* Record of row r, chunk c (columns 64c..64c+63) of a down weight row `row` (GGUF type t,
 * F columns); columns past F (a Q8_0 / Q4_0 width of 32 mod 64) are zeros.
 *   Q4_K: d, dmin (f16), sc0, m0, sc1, m1 (6-bit), qs[32]: byte i = column i | column 32+i << 4
 *   Q6_K: d (f16), sc[4] (int8, a scale per 16 columns), 2 pad, ql[32] (column i | 32+i << 4),
 *         qh[16]: byte i = the high 2 bits of columns i, 16+i, 32+i, 48+i (bits 0-1, 2-3, 4-5, 6-7)
 *   Q8_0: d0, d1 (f16, the two blocks'), q[64]
 *   Q4_0: d0, d1 (f16), the two blocks' qs[16] as they are */
__device__ void slab_record(int t, const uint8_t *row, int c, int F, uint8_t *o) {
    if (t == GGML_TYPE_Q4_K) {
        const uint8_t *b = row + (c / 4) * 144;
        const int j = c % 4;
        int sc0, m0, sc1, m1;
        k4_scale(b + 4, 2 * j, sc0, m0);
        k4_scale(b + 4, 2 * j + 1, sc1, m1);
        o[0] = b[0]; o[1] = b[1]; o[2] = b[2]; o[3] = b[3];
        o[4] = (uint8_t)sc0; o[5] = (uint8_t)m0; o[6] = (uint8_t)sc1; o[7] = (uint8_t)m1;
        for (int i = 0; i < 32; i++) o[8 + i] = b[16 + 32 * j + i];
    } else if (t == GGML_TYPE_Q6_K) {
        const uint8_t *b = row + (c / 4) * 210;
        const int hh = (c % 4) / 2, sub = c % 2;
        uint8_t q[64];
        for (int v = 0; v < 64; v++) {   /* dequantize_row_q6_K's indexing: position j of the half, l = j % 32, quarter t = j / 32 */
            const int jj = 64 * sub + v, l = jj % 32, qt = jj / 32;
            const uint8_t lb = b[64 * hh + l + (qt & 1) * 32];
            q[v] = (uint8_t)(((qt < 2 ? lb : lb >> 4) & 15) | (((b[128 + 32 * hh + l] >> (2 * qt)) & 3) << 4));
        }
        o[0] = b[208]; o[1] = b[209];
        for (int g = 0; g < 4; g++) o[2 + g] = b[192 + 8 * hh + (g % 2) + 2 * (2 * sub + g / 2)];
        o[6] = o[7] = 0;
        for (int i = 0; i < 32; i++) o[8 + i] = (uint8_t)((q[i] & 15) | (q[32 + i] & 15) << 4);
        for (int i = 0; i < 16; i++) o[40 + i] = (uint8_t)((q[i] >> 4) | (q[16 + i] >> 4) << 2 | (q[32 + i] >> 4) << 4 | (q[48 + i] >> 4) << 6);
    } else if (t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0) {
        const int bs = t == GGML_TYPE_Q8_0 ? 34 : 18, nq = bs - 2;
        for (int k = 0; k < 2; k++) {
            const bool in = 64 * c + 32 * k < F;
            const uint8_t *b = row + (size_t)(2 * c + k) * bs;
            o[2 * k] = in ? b[0] : 0;
            o[2 * k + 1] = in ? b[1] : 0;
            for (int i = 0; i < nq; i++) o[4 + nq * k + i] = in ? b[2 + i] : 0;
        }
    }
}
/* one thread a record: expert e, chunk c, row r of the slab (e, c) */
__global__ void k_slab(const uint8_t *__restrict__ w, int t, size_t rb, int F, int E, int ne, uint8_t *__restrict__ out) {
    const int nc = (F + 63) / 64, cb = slab_cb(t);
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)ne * nc * E) return;
    const int r = (int)(i % E), c = (int)(i / E % nc), e = (int)(i / E / nc);
    slab_record(t, w + ((size_t)e * E + r) * rb, c, F, out + i * cb);
}
/* A record's dot with the chunk's h: 64 int8 values hq (16 words) with per 32 a float2
 * (scale, scale x sum) as warp_quant2 writes them. One thread a row: the records of a warp's
 * rows lie 40-68 bytes apart, so 8-byte (Q4_K, Q6_K) or 4-byte loads of consecutive lanes
 * fall in distinct banks. */
template <int T> __device__ __forceinline__ float slab_dot(const uint8_t *p, const int *hq, float2 h0, float2 h1);
template <> __device__ __forceinline__ float slab_dot<GGML_TYPE_Q4_K>(const uint8_t *p, const int *hq, float2 h0, float2 h1) {
    const uint2 hd = *(const uint2 *)p;
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const uint2 q = *(const uint2 *)(p + 8 + 8 * k);
        s0 = __dp4a((int)(q.x & 0x0F0F0F0Fu), hq[2 * k], s0);
        s0 = __dp4a((int)(q.y & 0x0F0F0F0Fu), hq[2 * k + 1], s0);
        s1 = dp4a_hi(q.x, hq[8 + 2 * k], s1);
        s1 = dp4a_hi(q.y, hq[8 + 2 * k + 1], s1);
    }
    s1 >>= 4;
    const float d = f16lo(hd.x), dm = f16hi(hd.x);
    return d * ((float)(hd.y & 0xFF) * h0.x * (float)s0 + (float)((hd.y >> 16) & 0xFF) * h1.x * (float)s1) -
           dm * ((float)((hd.y >> 8) & 0xFF) * h0.y + (float)(hd.y >> 24) * h1.y);
}
template <> __device__ __forceinline__ float slab_dot<GGML_TYPE_Q6_K>(const uint8_t *p, const int *hq, float2 h0, float2 h1) {
    const uint2 hd = *(const uint2 *)p;
    uint32_t L[8], H[4];
#pragma unroll
    for (int k = 0; k < 4; k++) { const uint2 v = *(const uint2 *)(p + 8 + 8 * k); L[2 * k] = v.x; L[2 * k + 1] = v.y; }
#pragma unroll
    for (int k = 0; k < 2; k++) { const uint2 v = *(const uint2 *)(p + 40 + 8 * k); H[2 * k] = v.x; H[2 * k + 1] = v.y; }
    int s0 = 0, s1 = 0, s2 = 0, s3 = 0;   /* the four groups of 16 columns */
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const uint32_t v0 = (L[k] & 0x0F0F0F0Fu) | ((H[k] << 4) & 0x30303030u), v1 = (L[4 + k] & 0x0F0F0F0Fu) | ((H[k] << 2) & 0x30303030u);
        const uint32_t v2 = ((L[k] >> 4) & 0x0F0F0F0Fu) | (H[k] & 0x30303030u), v3 = ((L[4 + k] >> 4) & 0x0F0F0F0Fu) | ((H[k] >> 2) & 0x30303030u);
        s0 = __dp4a((int)__vsub4(v0, 0x20202020u), hq[k], s0);
        s1 = __dp4a((int)__vsub4(v1, 0x20202020u), hq[4 + k], s1);
        s2 = __dp4a((int)__vsub4(v2, 0x20202020u), hq[8 + k], s2);
        s3 = __dp4a((int)__vsub4(v3, 0x20202020u), hq[12 + k], s3);
    }
    const float d = f16lo(hd.x);
    const int c0 = (int)(int8_t)(hd.x >> 16), c1 = (int)(int8_t)(hd.x >> 24), c2 = (int)(int8_t)hd.y, c3 = (int)(int8_t)(hd.y >> 8);
    return d * (h0.x * (float)(c0 * s0 + c1 * s1) + h1.x * (float)(c2 * s2 + c3 * s3));
}
template <> __device__ __forceinline__ float slab_dot<GGML_TYPE_Q8_0>(const uint8_t *p, const int *hq, float2 h0, float2 h1) {
    const uint32_t dd = *(const uint32_t *)p;
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        s0 = __dp4a(*(const int *)(p + 4 + 4 * k), hq[k], s0);
        s1 = __dp4a(*(const int *)(p + 36 + 4 * k), hq[8 + k], s1);
    }
    return f16lo(dd) * h0.x * (float)s0 + f16hi(dd) * h1.x * (float)s1;
}
template <> __device__ __forceinline__ float slab_dot<GGML_TYPE_Q4_0>(const uint8_t *p, const int *hq, float2 h0, float2 h1) {
    const uint32_t dd = *(const uint32_t *)p;
    int s0 = 0, s1 = 0, t0 = 0, t1 = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {   /* a Q4_0 block: byte i = column i | column 16+i << 4 */
        const uint32_t a = *(const uint32_t *)(p + 4 + 4 * k), b = *(const uint32_t *)(p + 20 + 4 * k);
        s0 = __dp4a((int)(a & 0x0F0F0F0Fu), hq[k], s0);
        t0 = dp4a_hi(a, hq[4 + k], t0);
        s1 = __dp4a((int)(b & 0x0F0F0F0Fu), hq[8 + k], s1);
        t1 = dp4a_hi(b, hq[12 + k], t1);
    }
    s0 += t0 >> 4;
    s1 += t1 >> 4;
    return f16lo(dd) * (h0.x * (float)s0 - 8.f * h0.y) + f16hi(dd) * (h1.x * (float)s1 - 8.f * h1.y);
}

/* F's row table (PkPairRows' note) */
struct PkFRows {   /* rows 0-3: gate rows o0.. of the expert, 4-7: its up rows */
    const uint8_t *g, *u;
    size_t rb;
    __device__ __forceinline__ const uint8_t *operator[](int r) const { return r < 4 ? g + (size_t)r * rb : u + (size_t)(r - 4) * rb; }
};
/* F's weights for the layer, read into registers before the top-k (after a barrier a load
 * from PLayer is a round trip to L2, which would sit between the top-k and the first copies) */
struct PkFGeo {
    const uint8_t *wg, *wu, *ds;
    size_t rb;
    int F, nc, tg, td, cb, fcap, dpr;
};
__device__ __forceinline__ PkFGeo pk_fgeo(const PLayer &L) {
    return PkFGeo{L.w[PW_G], L.w[PW_U], L.ds, L.rb[PW_G], L.F, (L.F + 63) / 64, L.t[PW_G], L.t[PW_D], L.dcb, L.fcap, L.dpr};
}
/* F's item it = k * nc + c: 64 columns (chunk c) of expert slot k; warp w's gate/up rows are
 * outputs o0 = 64 c + 4 w.., and its share of the down slab rows w * E / 16.. */
struct PkItem {
    int k, o0, nv;   /* nv: the warp's valid outputs (0..4) */
    PkFRows wp;
    const uint8_t *slab;   /* the warp's first slab row of (expert, chunk) */
};
__device__ __forceinline__ PkItem pk_item(const PArgs &a, const PkFGeo &f, const PSmem &s, int it) {
    const int k = it / f.nc, c = it % f.nc, e = s.sel[k], w = threadIdx.x / WARP, o0 = 64 * c + 4 * w;
    return PkItem{k, o0, max(0, min(4, f.F - o0)), PkFRows{f.wg + ((size_t)e * f.F + o0) * f.rb, f.wu + ((size_t)e * f.F + o0) * f.rb, f.rb},
                  f.ds + (((size_t)e * f.nc + c) * a.E + (size_t)w * (a.E / PK_WARPS)) * f.cb};
}
/* lane 0 asks for n slab rows from p into dst, completing on mbarrier mb */
__device__ __forceinline__ void pk_slab_issue(const uint8_t *p, int n, int cb, uint8_t *dst, uint64_t *mb) {
    if (threadIdx.x % WARP || n <= 0) return;
    const uint32_t m = (uint32_t)__cvta_generic_to_shared(mb);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");   /* the buffer's generic reads and writes before the copy's */
    mb_expect(m, (uint32_t)(n * cb));
    bulk_g2s((uint32_t)__cvta_generic_to_shared(dst), p, (uint32_t)(n * cb), m, l2_evict_first());
}
/* rows [r0, r0 + n) of the warp's share, staged at st: each lane's rows' dots, weighted,
 * added to acc as fixed point (integer adds in any order give one sum: the step stays
 * deterministic where float atomics would not) */
template <int T>
__device__ __forceinline__ void pk_slab_rows(const PArgs &a, const uint8_t *st, int r0, int n, const int *hq, float2 h0, float2 h1, float wk) {
    const int lane = threadIdx.x % WARP, row0 = (threadIdx.x / WARP) * (a.E / PK_WARPS) + r0;
#pragma unroll 2   /* two rows' loads and dots in flight: fewer spills than rolled (36 / 84 bytes against 40 / 112), tg128 +0.7% */
    for (int r = lane; r < n; r += WARP) {
        const float v = slab_dot<T>(st + (size_t)r * slab_cb(T), hq, h0, h1) * wk;
        atomicAdd((unsigned long long *)(a.acc + row0 + r), (unsigned long long)__float2ll_rn(v * PK_FX));
    }
}
template <int FAM>
__device__ __forceinline__ void pk_slab_dot(int t, const PArgs &a, const uint8_t *st, int r0, int n, const int *hq, float2 h0, float2 h1, float wk) {
#define PK_CASE(T) case T: if constexpr (slab_cb(T) > 0) pk_slab_rows<T>(a, st, r0, n, hq, h0, h1, wk); break;
    PK_FAM_SWITCH(FAM, t, PK_CASE)
#undef PK_CASE
}
/* F (with G's work): the top-k on the folded router's logits, the block's first item's rows
 * asked for (each warp's first gate/up rows, then its slab rows), the norm of h2 while they
 * fly, the weights; then per item: gate and up of 4 outputs a warp, SwiGLU into the block's
 * chunk of h, its int8 copy, and every warp's slab rows against it into acc. Slab rows
 * beyond what fits beside the gate/up pipe (L.dpr a warp) are asked for once the pipe is
 * done. K x F / 64 items (96 for Qwen3-30B-A3B) leave 36 of 132 blocks idle here: spreading
 * the gate/up rows over every warp and the chunks' h through L2 with a count per chunk
 * was slower (tg128 -6% on the H100, bench/NOTES.md P107): the waits for other blocks'
 * counts and the h round trip sat on the phase's tail. */
template <int FAM> __device__ void pk_ffn(const PArgs &a, const PLayer &L, const PSmem &s, int l, unsigned &fph) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    /* the router's pieces (D's) at the warp buffers' end (the top-k's keys and ranks
     * take their start), summed in piece order (every block the same logits) */
    const int np = pk_rpieces(a.E, a.qdim);
    float *zs = (float *)(s.wb + PK_WARPS * PK_WB) - PK_RPMAX * PK_THREADS;
    for (int i = threadIdx.x; i < np * a.ne; i += blockDim.x) cp_async4(zs + i, a.rpart + i);
    /* and h2 (into s.xr: A's copy of x was D's last need of it), so that the norm after
     * the rows' issue reads shared memory, not L2 behind the rows' queue */
    for (int i = threadIdx.x; i < a.E / 4; i += blockDim.x) cp_async16(s.xr + 4 * i, a.h2 + 4 * i);
    for (int i = threadIdx.x; i < (int)gridDim.x; i += blockDim.x) cp_async4(s.ssp + i, a.ssq + i);   /* and D's partial sums of squares of h2 */
    cp_async_commit();
    /* the layer's geometry, read before the top-k so that its round trip is not between the
     * top-k and the first copies (a load cannot move past the barriers) */
    const PkFGeo f = pk_fgeo(L);
    const int tg = f.tg, td = f.td, cb = f.cb, fcap = f.fcap, dpr = f.dpr, rpw = a.E / PK_WARPS, nit = a.K * f.nc;
    const size_t rbg = f.rb;
    cp_async_wait_all();   /* and the norm's weights (D's window) */
    __syncthreads();
    float z = 0.f;
    if ((int)threadIdx.x < a.ne)
        for (int p = 0; p < np; p++) z += zs[p * a.ne + threadIdx.x];
    int top = 0;
    pk_topk(a, s, l, z, top);
    pk_mark(a, l, 3);
    uint8_t *buf = s.wb + w * PK_WB, *early = buf + 8 * fcap;
    uint64_t *mbe = s.mb + PK_WARPS + w, *mbl = s.mb + 2 * PK_WARPS + w;
    bool pre = false;
    if ((int)blockIdx.x < nit) {
        const PkItem I = pk_item(a, f, s, blockIdx.x);
        const unsigned m = (1u << I.nv) - 1u;
        if (I.nv) pre = pk_issue_pipe<FAM, 8, PK_FPIPE>(tg, I.wp, m | (m << 4), rbg, a.E, buf, pk_stamp(a, l, 8), fcap);
        pk_slab_issue(I.slab, dpr, cb, early, mbe);
    }
    const float rs = norm_xq(s.xr, s.ssp, gridDim.x, a.E, a.eps, s.xsf, s.xs, s.xds);
    pk_mark(a, l, 2);
    pk_topk_w(a, s, rs, top);
    for (int it = blockIdx.x; it < nit; it += gridDim.x) {
        const bool first = it == (int)blockIdx.x;
        const PkItem I = pk_item(a, f, s, it);
        if (!first) pk_slab_issue(I.slab, dpr, cb, early, mbe);
        float *res = s.res + w * PK_MAXK;
        if (I.nv) {
            const unsigned m = (1u << I.nv) - 1u;
            pk_rows<FAM, 8, PK_W, PK_FPIPE>(tg, I.wp, m | (m << 4), rbg, a.E, s.xs, s.xds, res, buf, first && pre, first ? pk_stamp(a, l, 8) : nullptr,
                                            fcap);
        }
        if (first) pk_mark(a, l, 4);
        if (lane < 4) s.hc[4 * w + lane] = lane < I.nv ? res[lane] / (1.0f + expf(-res[lane])) * res[4 + lane] : 0.f;
        /* the pipe's slots are free: the rows that did not fit beside it, into them */
        int r0 = dpr, n1 = min(rpw - r0, 8 * fcap / cb / 16 * 16);
        __syncwarp();
        pk_slab_issue(I.slab + (size_t)r0 * cb, n1, cb, buf, mbl);
        __syncthreads();
        if (first) pk_mark(a, l, 16);
        if (w < 2) warp_quant2(s.hc[32 * w + lane], s.hcq + 32 * w, s.hcd + w);
        __syncthreads();
        if (first) pk_mark(a, l, 17);
        int hq[16];
#pragma unroll
        for (int i = 0; i < 16; i++) hq[i] = ((const int *)s.hcq)[i];
        const float2 h0 = s.hcd[0], h1 = s.hcd[1];
        const float wk = s.selw[I.k];
        if (r0 > 0) {
            mb_wait((uint32_t)__cvta_generic_to_shared(mbe), fph & 1u);
            fph ^= 1u;
            pk_slab_dot<FAM>(td, a, early, 0, r0, hq, h0, h1, wk);
        }
        if (first) pk_mark(a, l, 18);
        /* then the rest, a buffer at a time (a warp's share wider than the buffer: n_embd >
         * 2,048), each round asked for when none is in flight (the first is in flight unless
         * the pipe's slots held fewer than 16 rows: narrow models) */
        while (r0 < rpw) {
            if (n1 == 0) {
                n1 = min(rpw - r0, PK_WB / cb / 16 * 16);
                __syncwarp();
                pk_slab_issue(I.slab + (size_t)r0 * cb, n1, cb, buf, mbl);
            }
            mb_wait((uint32_t)__cvta_generic_to_shared(mbl), (fph >> 1) & 1u);
            fph ^= 2u;
            pk_slab_dot<FAM>(td, a, buf, r0, n1, hq, h0, h1, wk);
            r0 += n1;
            n1 = 0;
        }
        if (it + (int)gridDim.x < nit) __syncthreads();   /* s.hc, s.hcq are the next item's */
    }
    pk_mark(a, l, 5);
    if (a.prof && blockIdx.x == 0 && threadIdx.x == 0) {   /* when thread 0's adds are performed */
        __threadfence();
        pk_mark(a, l, 19);
    }
    if (blockIdx.x == 0 && w == 1) pk_rec_p(a, s, l);
}

/* H: the output head, PK_HR rows a group; the argmax reduced over the group's rows before
 * its one atomic (one per row would queue 152K atomics on one address). 4 rows, not 8: a
 * whole 2048-wide Q6_K row (1,680 bytes) fits a 4-row staging slot, so a group is one
 * contiguous 6.7 KB read instead of two column chunks of 8 rows (head 122 -> 112 us on the
 * H100, bench/NOTES.md P56). */
#define PK_HR 4
struct PkOutRows {   /* rows r0.., the last repeated past the vocabulary */
    const uint8_t *w;
    size_t rb;
    int r0, last;
    __device__ __forceinline__ const uint8_t *operator[](int r) const { return w + (size_t)min(r0 + r, last) * rb; }
};
template <int R> __device__ __forceinline__ PkOutRows pk_out_rows(const PArgs &a, int g) { return PkOutRows{a.out_w, a.out_rb, g * R, a.nvocab - 1}; }   /* R-row group g's */
/* The head in 2-row groups, two groups in flight per warp (the next group's copies are
 * issued before the current one is multiplied, so a warp's stream has no gap while it
 * multiplies), the argmax kept per lane across groups: one atomic per warp. 112.9 -> 100.0
 * us a token on the H100 (bench/NOTES.md P68). For heads whose whole row, with its staging
 * slack (stage_cap's), fits a quarter of the warp's slot: 2048-wide Q6_K / Q8_0 rows;
 * wider ones take pk_head's PK_HR loop. */
#define PK_HCAP (PK_WB / 4 / 16 * 16)
__device__ __forceinline__ bool pk_head2(const PArgs &a) { return a.out_rb + 31 + 15 <= PK_HCAP; }
template <int FAM> __device__ void pk_pre_head(const PArgs &a, const PSmem &s, int gw) {
    norm_stage_w(a.out_norm, a.E, s.xsf);
    cp_async_commit();
    uint8_t *buf = s.wb + (threadIdx.x / WARP) * PK_WB;
    if (pk_head2(a)) {
        if (gw * 2 < a.nvocab) rows_issue_p(pk_out_rows<2>(a, gw), 2, 3u, 0, a.out_rb, buf, PK_HCAP);
        cp_async_commit();
    } else if (gw * PK_HR < a.nvocab) {
        pk_issue<FAM, PK_HR>(a.out_t, pk_out_rows<PK_HR>(a, gw), (1u << PK_HR) - 1u, a.out_rb, buf);
    } else {
        cp_async_commit();
    }
}
template <int T> __device__ void pk_head_pipe(const PArgs &a, const PSmem &s, int gw, int NW, uint8_t *buf, float *res) {
    using Q = QW<T>;
    const int lane = threadIdx.x % WARP, SB = stage_sb<T>(), niter = a.E / 256;
    unsigned long long key = 0ull;
    int slot = 0;
    for (int g = gw; g * 2 < a.nvocab; g += NW, slot ^= 1) {
        if ((g + NW) * 2 < a.nvocab) rows_issue_p(pk_out_rows<2>(a, g + NW), 2, 3u, 0, a.out_rb, buf + (slot ^ 1) * 2 * PK_HCAP, PK_HCAP);
        cp_async_commit();
        cp_async_wait_but_one();
        __syncwarp();
        rows_shx<Q, 8, 2>(pk_out_rows<2>(a, g), 3u, 0, s.xs, s.xds, 0, niter, SB, res, buf + slot * 2 * PK_HCAP, PK_HCAP);
        __syncwarp();
        const int row0 = g * 2, nv = min(2, a.nvocab - row0);
        const float v = lane < nv ? res[lane] : 0.f;
        __syncwarp();
        if (lane < nv) {
            a.logits[row0 + lane] = v;
            if (v == v) key = max(key, argmax_key(v, row0 + lane));
        }
    }
#pragma unroll
    for (int o = 1; o < WARP; o <<= 1) key = max(key, __shfl_xor_sync(0xffffffffu, key, o));
    if (lane == 0 && key) atomicMax(a.amax, key);
}
template <int FAM> __device__ void pk_head(const PArgs &a, const PSmem &s, int gw, int NW) {
    pk_norm(a.nl ? a.h2 : a.x, a.nl ? a.acc : nullptr, a.E, a.eps, s.xsf, s.xs, s.xds, true);
    const int lane = threadIdx.x % WARP;
    uint8_t *buf = s.wb + (threadIdx.x / WARP) * PK_WB;
    float *res = s.res + (threadIdx.x / WARP) * PK_MAXK;
    if (pk_head2(a)) {
#define PK_CASE(T) case T: pk_head_pipe<T>(a, s, gw, NW, buf, res); break;
        PK_FAM_SWITCH(FAM, a.out_t, PK_CASE)
#undef PK_CASE
        return;
    }
    for (int g = gw; g * PK_HR < a.nvocab; g += NW) {
        const int row0 = g * PK_HR, nv = min(PK_HR, a.nvocab - row0);
        pk_rows<FAM, PK_HR>(a.out_t, pk_out_rows<PK_HR>(a, g), g == gw ? (1u << PK_HR) - 1u : (1u << nv) - 1u, a.out_rb, a.E, s.xs, s.xds, res, buf, g == gw);
        const float v = lane < nv ? res[lane] : 0.f;
        if (lane < nv) a.logits[row0 + lane] = v;
        unsigned long long key = lane < nv && v == v ? argmax_key(v, row0 + lane) : 0ull;
#pragma unroll
        for (int o = PK_HR / 2; o > 0; o >>= 1) key = max(key, __shfl_xor_sync(0xffffffffu, key, o));
        if (lane == 0 && key) atomicMax(a.amax, key);
    }
}

/* A whole decode step: reads every weight byte of the step once (1.92 GB for 30B-A3B
 * Q4_K_M: the K experts, attention, router, head) plus the KV rows, in phases over all
 * SMs (one 16-warp block each, so that the grid barriers cost ~1 us and each warp can
 * issue its next phase's copies before waiting). */
template <int FAM, int AM> __global__ void __launch_bounds__(PK_THREADS, 1) k_persist(const PArgs a) {
    extern __shared__ __align__(16) uint8_t sbuf[];
    PSmem s;
    {
        const size_t xp = xq_pad(max(a.E, a.qdim));
        uint8_t *p = sbuf;
        s.xs = (int8_t *)p; p += xs_bytes(xp);
        s.xds = (float2 *)p; p += xp / 4;
        s.xsf = (float *)p; p += 4 * (size_t)a.E;
        s.xr = (float *)p; p += 4 * (size_t)a.E;
        s.hc = (float *)p; p += 4 * 64;
        s.hcq = (int8_t *)p; p += 64;
        s.hcd = (float2 *)p; p += 16;
        s.lg = (float *)p; p += 4 * (size_t)((a.ne + 3) / 4 * 4);
        s.sel = (int *)p; p += 4 * PK_MAXK;
        s.selw = (float *)p; p += 4 * PK_MAXK;
        s.res = (float *)p; p += 4 * PK_WARPS * PK_MAXK;
        s.ssp = (float *)p; p += 4 * PK_SSMAX;
        s.mb = (uint64_t *)(p + (-(uintptr_t)p & 7)); p += 8 + 8 * 3 * PK_WARPS;
        s.wb = p + (-(uintptr_t)p & 63);   /* aligned by an offset, not through an integer cast: the rows staged here stay known as shared memory, so their loads compile to LDS instead of generic loads */
    }
    /* a phase's groups go round the blocks first, so that every SM gets a share */
    const int gw = (threadIdx.x / WARP) * gridDim.x + blockIdx.x, NW = gridDim.x * PK_WARPS;
    const int pos = *a.pos_dev;
    unsigned nb = 0, nt = 0;   /* phase ends (the profile's rows), grid barriers */
    unsigned fph = 0;          /* the phases of pk_ffn's mbarriers waited on (bit 0 the early rows', bit 1 the late) */
    if (a.prof && blockIdx.x == 0 && threadIdx.x == 0) a.prof[(size_t)PK_PROF_MAXB * gridDim.x] = gtimer();
#define PK_SYNC(BETWEEN) PK_SYNC_SS(nullptr, BETWEEN)
    /* and the block's partial sum of squares to SSQ (its warps' in s.res) */
#define PK_SYNC_SS(SSQ, BETWEEN)                \
    do {                                        \
        pk_arrive(a.bar, a.prof ? a.prof + (size_t)nb * gridDim.x : nullptr, SSQ, s.res); \
        BETWEEN;                                \
        pk_wait(a.bar, ++nt * gridDim.x);       \
        if (a.prof && blockIdx.x == 0 && threadIdx.x == 0) a.prof[(size_t)PK_PROF_MAXB * gridDim.x + nb + 1] = gtimer(); \
        nb++;                                   \
    } while (0)
    /* a phase end with no barrier (A's, C under AM_ONE): its profile row, stamped */
#define PK_SKIP()                               \
    do {                                        \
        if (a.prof && threadIdx.x == 0) a.prof[(size_t)nb * gridDim.x + blockIdx.x] = gtimer(); \
        if (a.prof && blockIdx.x == 0 && threadIdx.x == 0) a.prof[(size_t)PK_PROF_MAXB * gridDim.x + nb + 1] = gtimer(); \
        nb++;                                   \
    } while (0)
    if (threadIdx.x % WARP == 0)   /* pk_pre_qkv's, pk_ffn's two */
        for (int i = 0; i < 3; i++) mb_init((uint32_t)__cvta_generic_to_shared(s.mb + i * PK_WARPS + threadIdx.x / WARP));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    __syncthreads();
    pk_pre_qkv<FAM>(a, a.L[0], s, gw);
    for (int l = 0; l < a.nl; l++) {
        const PLayer &L = a.L[l];
        pk_qkv<FAM>(a, L, s, l, pos, gw, NW);
        __syncthreads();   /* the warps' staging is the attention item's next */
        pk_pf_attn<AM>(a, L, s, pos);
        PK_SKIP();   /* no barrier: an item waits for its own KV head (pk_kv_wait) */
        pk_attn<AM>(a, L, s, l, pos);
        if constexpr (AM == AM_ONE) PK_SKIP();
        else {
            PK_SYNC((void)0);
            pk_comb<AM>(a, s, pos);
        }
        PK_SYNC(pk_pre_o<FAM>(a, L, s, l, gw));
        pk_oproj<FAM>(a, L, s, l, gw, NW);
        PK_SYNC_SS(a.ssq, pk_pre_ffn(a, L, s));
        PK_SKIP();   /* E: no phase of its own (the router in D, the norm in F); its profile row stays */
        pk_ffn<FAM>(a, L, s, l, fph);
        PK_SKIP();   /* F ends without a barrier: G's row is the barrier to the next layer */
        if (l + 1 < a.nl) PK_SYNC(pk_pre_qkv<FAM>(a, a.L[l + 1], s, gw));
    }
    if (!a.head && a.nl) {   /* the step's x for the host's head: h2 + acc, once every block's F is in */
        PK_SYNC((void)0);
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < a.E / 4; i += gridDim.x * blockDim.x) ((float4 *)a.x)[i] = pk_x4(a.h2, a.acc, i);
    }
    if (a.head) {
        PK_SYNC(pk_pre_head<FAM>(a, s, gw));
        pk_head<FAM>(a, s, gw, NW);
        /* the head's end per block, in the profile's last row (the report's H line) */
        if (a.prof && threadIdx.x == 0) a.prof[(size_t)(PK_PROF_MAXB - 1) * gridDim.x + blockIdx.x] = gtimer();
    }
#undef PK_SYNC
#undef PK_SYNC_SS
#undef PK_SKIP
}

/* ======================================================================
 * Expert GEMM on quantized weights (prefill): for every work item (expert e, up to
 * MG_BN of its slot rows) C[slot][col + r] = W_e[r] . X[slot], one launch per weight
 * for the whole layer. Each block reads its MG_BM weight rows once per item in their
 * GGUF type (cp.async, 16-byte pieces), dequantizes one MG_BK step at a time to f16 in
 * shared memory and multiplies on the tensor cores with f32 accumulation: the arithmetic
 * of dequantize-to-scratch + cuBLAS (up to the f16 rounding of the block scales, Sub32)
 * without writing and re-reading 2 bytes per weight (1.2 GB per layer of Qwen3-30B-A3B).
 * Work items and their count come from k_route on the device. Moves per block: MG_BM rows'
 * quant bytes + MG_BN x Kd f16 of X in, MG_BM x MG_BN f32 out. Steps are double
 * buffered: step k+1's copies fly while step k is dequantized and multiplied.
 * ==================================================================== */
#define MG_BM 64            /* weight rows per block: 4 row fragments of 16 */
#define MG_BN 32            /* slot rows per work item: 2 column fragments of 16 */
#define MG_BK 256           /* columns per step: one K-quant superblock, 8 blocks of the 32-wide types */
#define MG_LD (MG_BK + 8)   /* f16 tile pitch: +16 bytes puts the 8 rows of a fragment load in different banks */
#define MG_THREADS 256      /* 8 warps, each the whole 64 x 32 tile over its 32 columns of the step (split K) */
#define MG_RAW 288          /* staged bytes per row and step: Q8_0's 272 and a 16-byte piece of alignment slack */
#define MG_SMEM ((MG_BM * MG_LD + 2 * MG_BN * MG_LD) * 2 + 2 * MG_BM * MG_RAW + 16)   /* + the word ld8_a2 may read past the last row */

/* the 4 bytes of x as halves 1024 + byte (exact: f16 steps by 1 in [1024, 2048)), in order */
__device__ __forceinline__ void bytes_h2(uint32_t x, __half2 &lo, __half2 &hi) {
    const uint32_t a = __byte_perm(x, 0x64646464u, 0x5140), b = __byte_perm(x, 0x64646464u, 0x5342);
    lo = *(const __half2 *)&a;
    hi = *(const __half2 *)&b;
}
/* One 32-element sub-block j of a step's quant bytes (b), decoded 8 elements (chunk c) at a
 * time into f16 pairs: the scales once per sub-block, then per chunk the integer parts through
 * bytes_h2 and an exact subtraction, so each weight is rounded once, from its f16 scale times
 * its integer (~1.5 instructions per weight where dq8_body takes ~8). */
template <int T> struct Sub32 {
    const uint8_t *q, *qh;
    __half2 d, d1, nm, k;
    int sh;
    __device__ __forceinline__ Sub32(const uint8_t *b, int j) {
        nm = __float2half2_rn(0.f);
        if constexpr (T == GGML_TYPE_Q4_K) {   /* 144-byte superblocks stay 16-byte aligned: aligned words */
            const uint8_t *s = b + 4;
            int sc, m;
            if (j < 4) { sc = s[j] & 63; m = s[j + 4] & 63; }
            else { sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4); m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
            d = __float2half2_rn(ldh(b) * (float)sc);
            nm = __float2half2_rn(-ldh(b + 2) * (float)m);
            k = __float2half2_rn(1024.f);
            q = b + 16 + 32 * (j / 2);
            sh = 4 * (j & 1);
        } else if constexpr (T == GGML_TYPE_Q6_K) {   /* ql and qh of the sub-block; a scale per 16 */
            const int h = j / 4, t = j % 4;
            const float dd = ldh(b + 208);
            q = b + 64 * h + 32 * (t & 1);
            qh = b + 128 + 32 * h;
            sh = t;
            d = __float2half2_rn(dd * (float)(int8_t)b[192 + 8 * h + 2 * t]);
            d1 = __float2half2_rn(dd * (float)(int8_t)b[193 + 8 * h + 2 * t]);
            k = __float2half2_rn(1056.f);   /* 1024 + the offset 32 */
        } else if constexpr (T == GGML_TYPE_Q8_0) {
            q = b + 34 * j;
            d = __float2half2_rn(ldh(q));
            k = __float2half2_rn(1152.f);   /* 1024 + 128: the sign bit flipped below */
        } else if constexpr (T == GGML_TYPE_Q4_0) {
            q = b + 18 * j;
            d = __float2half2_rn(ldh(q));
            k = __float2half2_rn(1032.f);   /* 1024 + the offset 8 */
        } else {
            q = b;
            sh = j;
        }
    }
    /* elements 8c .. 8c+7 of the sub-block */
    __device__ __forceinline__ void chunk(int c, __half2 *o) const {
        if constexpr (T != GGML_TYPE_Q4_K && T != GGML_TYPE_Q6_K && T != GGML_TYPE_Q8_0 && T != GGML_TYPE_Q4_0) {   /* the general decoder */
            float y[8];
            dq8_body(T, q, 32 * sh + 8 * c, 8, y);
#pragma unroll
            for (int i = 0; i < 4; i++) o[i] = __floats2half2_rn(y[2 * i], y[2 * i + 1]);
        } else {
            uint32_t x[2];
            __half2 dc = d;
            if constexpr (T == GGML_TYPE_Q4_K) {
                const uint2 v = *(const uint2 *)(q + 8 * c);
                x[0] = (v.x >> sh) & 0x0F0F0F0Fu;
                x[1] = (v.y >> sh) & 0x0F0F0F0Fu;
            } else if constexpr (T == GGML_TYPE_Q6_K) {
                const uint2 lo = ld8_a2(q + 8 * c), hi = ld8_a2(qh + 8 * c);
                x[0] = ((lo.x >> (4 * (sh >> 1))) & 0x0F0F0F0Fu) | (((hi.x >> (2 * sh)) & 0x03030303u) << 4);
                x[1] = ((lo.y >> (4 * (sh >> 1))) & 0x0F0F0F0Fu) | (((hi.y >> (2 * sh)) & 0x03030303u) << 4);
                if (c >= 2) dc = d1;
            } else if constexpr (T == GGML_TYPE_Q8_0) {
                const uint2 v = ld8_a2(q + 2 + 8 * c);
                x[0] = v.x ^ 0x80808080u;
                x[1] = v.y ^ 0x80808080u;
            } else {   /* Q4_0: a block's low nibbles are elements 0..15, high ones 16..31 */
                const uint2 v = ld8_a2(q + 2 + 8 * (c & 1));
                x[0] = (v.x >> (4 * (c >> 1))) & 0x0F0F0F0Fu;
                x[1] = (v.y >> (4 * (c >> 1))) & 0x0F0F0F0Fu;
            }
#pragma unroll
            for (int w = 0; w < 2; w++) {
                __half2 lo, hi;
                bytes_h2(x[w], lo, hi);
                o[2 * w] = __hfma2(__hsub2(lo, k), dc, nm);
                o[2 * w + 1] = __hfma2(__hsub2(hi, k), dc, nm);
            }
        }
    }
};

template <int T>
__global__ void __launch_bounds__(MG_THREADS, 2) k_expert_gemm(const uint8_t *__restrict__ w0, const uint8_t *__restrict__ w1, size_t estride, size_t rb,
                                                            int M, int Kd, const int4 *__restrict__ items, const int *__restrict__ nitems,
                                                            const __half *__restrict__ X, int ldx, float *__restrict__ C, int ldc, int col1) {
    using namespace nvcuda;
    if ((int)blockIdx.y >= *nitems) return;   /* the grid is sized for the most items routing can make */
    extern __shared__ __align__(128) uint8_t smem[];
    __half *As = (__half *)smem;                           /* [MG_BM][MG_LD] dequantized weights of the step */
    __half *Xs = As + MG_BM * MG_LD;                       /* [2][MG_BN][MG_LD] */
    uint8_t *raw = (uint8_t *)(Xs + 2 * MG_BN * MG_LD);   /* [2][MG_BM][MG_RAW] */
    const int4 it = items[blockIdx.y];                     /* expert, first slot row, rows */
    const int slot = it.y, nt = it.z, r0 = blockIdx.x * MG_BM, rows = min(MG_BM, M - r0);
    const uint8_t *w = (blockIdx.z ? w1 : w0) + (size_t)it.x * estride + (size_t)r0 * rb;
    const int cb = stage_sb<T>(), npc = (cb + 15) / 16 + 1;   /* a row's quant bytes per step; 16-byte pieces from the aligned-down start */
    const int tid = threadIdx.x, warp = tid / 32, nk = Kd / MG_BK;
    /* (the weight arena ends in slack, so a row's last piece may read past the row) */
    auto stage = [&](int kc, int buf) {
        uint8_t *rs = raw + buf * MG_BM * MG_RAW;
        for (int i = tid; i < rows * npc; i += MG_THREADS) {
            const int r = i / npc, c = i % npc;
            const uintptr_t src = (uintptr_t)(w + (size_t)r * rb + (size_t)kc * cb) & ~(uintptr_t)15;
            cp_async16(rs + r * MG_RAW + 16 * c, (const void *)(src + 16 * c));
        }
        __half *xs = Xs + buf * MG_BN * MG_LD;
        for (int i = tid; i < MG_BN * (MG_BK / 8); i += MG_THREADS) {
            const int t = i / (MG_BK / 8), c = i % (MG_BK / 8);
            if (t < nt) cp_async16(xs + t * MG_LD + 8 * c, X + (size_t)(slot + t) * ldx + (size_t)kc * MG_BK + 8 * c);
            else *(uint4 *)(xs + t * MG_LD + 8 * c) = make_uint4(0, 0, 0, 0);
        }
        cp_async_commit();
    };
    /* Each warp multiplies the whole tile over its own 32 columns of every step: shared memory
     * is then read once per step (the tile's 48 KB of f16), where one 16 x 16 fragment per warp
     * read it 2.7 times and left the kernel bound by shared-memory bandwidth. The warps' partial
     * sums meet once, at the end. */
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[MG_BM / 16][MG_BN / 16];
#pragma unroll
    for (int i = 0; i < MG_BM / 16; i++)
#pragma unroll
        for (int j = 0; j < MG_BN / 16; j++) wmma::fill_fragment(acc[i][j], 0.f);
    stage(0, 0);
    for (int kc = 0; kc < nk; kc++) {
        const int buf = kc & 1;
        cp_async_wait_all();
        __syncthreads();   /* step kc has landed for all; step kc-1's products are done with As and the other buffers */
        if (kc + 1 < nk) stage(kc + 1, buf ^ 1);
        const uint8_t *rs = raw + buf * MG_BM * MG_RAW;
        /* a thread per (row, sub-block j); 8 neighbours take one row's 8 sub-blocks and store their
         * 4 chunks in rotated order (c = q + j/2), so each quarter-warp's 16-byte stores fall on 8
         * different bank groups */
        for (int i = tid; i < MG_BM * (MG_BK / 32); i += MG_THREADS) {
            const int r = i / (MG_BK / 32), j = i % (MG_BK / 32);
            __half *o = As + r * MG_LD + 32 * j;
            if (r < rows) {
                const Sub32<T> sb(rs + r * MG_RAW + ((uintptr_t)(w + (size_t)r * rb + (size_t)kc * cb) & 15), j);
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const int c = (q + j / 2) & 3;
                    uint4 v;
                    sb.chunk(c, (__half2 *)&v);
                    *(uint4 *)(o + 8 * c) = v;
                }
            } else {
#pragma unroll
                for (int q = 0; q < 4; q++) *(uint4 *)(o + 8 * q) = make_uint4(0, 0, 0, 0);
            }
        }
        __syncthreads();
        const __half *xs = Xs + buf * MG_BN * MG_LD;
#pragma unroll
        for (int k = warp * (MG_BK / 8); k < (warp + 1) * (MG_BK / 8); k += 16) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[MG_BN / 16];
#pragma unroll
            for (int j = 0; j < MG_BN / 16; j++) wmma::load_matrix_sync(b[j], xs + 16 * j * MG_LD + k, MG_LD);
#pragma unroll
            for (int i = 0; i < MG_BM / 16; i++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
                wmma::load_matrix_sync(a, As + 16 * i * MG_LD + k, MG_LD);
#pragma unroll
                for (int j = 0; j < MG_BN / 16; j++)
                    if (16 * j < nt) wmma::mma_sync(acc[i][j], a, b[j], acc[i][j]);
            }
        }
    }
    __syncthreads();
    /* [warp][MG_BN][MG_BM + 4]: each warp's partial tile, then summed in warp order (the same
     * result every run) and written out row-contiguous */
    const int CP = MG_BN * (MG_BM + 4);
    float *Cs = (float *)smem;
#pragma unroll
    for (int i = 0; i < MG_BM / 16; i++)
#pragma unroll
        for (int j = 0; j < MG_BN / 16; j++)
            wmma::store_matrix_sync(Cs + warp * CP + 16 * j * (MG_BM + 4) + 16 * i, acc[i][j], MG_BM + 4, wmma::mem_col_major);
    __syncthreads();
    const int cc = (blockIdx.z ? col1 : 0) + r0;
    for (int i = tid; i < nt * MG_BM; i += MG_THREADS) {
        const int t = i / MG_BM, r = i % MG_BM;
        float v = 0.f;
#pragma unroll
        for (int w2 = 0; w2 < MG_THREADS / 32; w2++) v += Cs[w2 * CP + t * (MG_BM + 4) + r];
        if (r < rows) C[(size_t)(slot + t) * ldc + cc + r] = v;
    }
}
static_assert(MG_THREADS / 32 * MG_BN * (MG_BM + 4) * 4 <= MG_SMEM, "the warps' partial tiles must fit the kernel's shared memory");

/* Prefill routing on the device, so the layer needs no round trip to the host: the nsel =
 * n*K chosen experts (sel, entry i*K+k) -> slot rows grouped by expert, in entry order within
 * each expert; perm[slot] = token, slot_of[entry] = slot; k_expert_gemm's work items (up to
 * MG_BN slot rows of one expert) and their number; cnt[e] when asked. One block, a stable
 * counting sort: each warp counts its own run of entries per expert, a warp scans the
 * totals, and each warp then places its run in order, ranking equal ids with match_any. An
 * id outside [0, ne) sets *bad and takes slot 0 (the caller reports it).
 * Dynamic shared memory: route_smem. */
#define RTE_WARPS 32
__global__ void __launch_bounds__(RTE_WARPS * WARP) k_route(const int *__restrict__ sel, int nsel, int K, int ne, int *__restrict__ perm,
                                                            int *__restrict__ slot_of, int4 *__restrict__ items, int *__restrict__ nitems,
                                                            int *__restrict__ cnt_out, int *__restrict__ bad) {
    extern __shared__ int rsm[];
    int *hist = rsm, *base = rsm + RTE_WARPS * ne;   /* hist[warp][e]: then each warp's next rank for e */
    const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP, NT = RTE_WARPS * WARP;
    const int run = (nsel + RTE_WARPS - 1) / RTE_WARPS, i0 = warp * run, i1 = min(nsel, i0 + run);
    for (int i = tid; i < RTE_WARPS * ne; i += NT) hist[i] = 0;
    __syncthreads();
    for (int i = i0 + lane; i < i1; i += WARP) {
        const int e = sel[i];
        if (e < 0 || e >= ne) { *bad = 1; slot_of[i] = 0; }
        else atomicAdd(&hist[warp * ne + e], 1);
    }
    __syncthreads();
    for (int e = tid; e < ne; e += NT) {   /* per expert: its total, and each warp's first rank */
        int c = 0;
        for (int w = 0; w < RTE_WARPS; w++) { const int h = hist[w * ne + e]; hist[w * ne + e] = c; c += h; }
        base[e] = c;
    }
    __syncthreads();
    if (warp == 0) {   /* exclusive prefix sums of the counts and of the items per expert */
        int rs = 0, irs = 0;
        for (int e0 = 0; e0 < ne; e0 += WARP) {
            const int c = e0 + lane < ne ? base[e0 + lane] : 0, ic = (c + MG_BN - 1) / MG_BN;
            int x = c, y = ic;
#pragma unroll
            for (int o = 1; o < WARP; o <<= 1) {
                const int t = __shfl_up_sync(~0u, x, o), u = __shfl_up_sync(~0u, y, o);
                if (lane >= o) { x += t; y += u; }
            }
            if (e0 + lane < ne) {
                const int b0 = rs + x - c;
                for (int t = 0; t < c; t += MG_BN) items[irs + y - ic + t / MG_BN] = make_int4(e0 + lane, b0 + t, min(MG_BN, c - t), 0);
                if (cnt_out) cnt_out[e0 + lane] = c;
                base[e0 + lane] = b0;
            }
            rs += __shfl_sync(~0u, x, WARP - 1);
            irs += __shfl_sync(~0u, y, WARP - 1);
        }
        if (lane == 0) *nitems = irs;
    }
    __syncthreads();
    for (int g0 = i0; g0 < i1; g0 += WARP) {   /* this warp's run, 32 entries at a time, in order */
        const int i = g0 + lane;
        const int e = i < i1 ? sel[i] : -1;
        const bool ok = e >= 0 && e < ne;
        const unsigned same = __match_any_sync(~0u, ok ? e : -1);
        if (ok) {
            const int slot = base[e] + hist[warp * ne + e] + __popc(same & ((1u << lane) - 1));
            perm[slot] = i / K;
            slot_of[i] = slot;
        }
        __syncwarp();
        if (ok && lane == __ffs(same) - 1) hist[warp * ne + e] += __popc(same);
        __syncwarp();
    }
}
static size_t route_smem(int ne) { return ((size_t)RTE_WARPS + 1) * ne * sizeof(int); }

/* the staged kernels may use more than 48 KB of dynamic shared memory; and all of the
 * SM's unified memory as shared memory: otherwise the driver may pick a 64 KB carveout
 * and fit one down block per SM (seen with ncu), i.e. two waves */
template <class K> static cudaError_t smem_attrs(K k) {
    cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    return e;
}
static cudaError_t set_smem_attrs() {
    static const int tts[] = {
#define SPEC_LIST(T) T,
        SPEC_TYPES(SPEC_LIST) SPEC_NONE
#undef SPEC_LIST
    };
    cudaError_t e = cudaSuccess;
    for (int tt : tts) {
        if (e == cudaSuccess) e = smem_attrs(mmv2_kernel(tt));
        if (e == cudaSuccess) e = smem_attrs(gateup2_kernel(tt));
        if (e == cudaSuccess) e = smem_attrs(down2_kernel(tt));
    }
    if (e == cudaSuccess) e = smem_attrs(k_route);
#define MG_ATTR(T) if (e == cudaSuccess) e = smem_attrs(k_expert_gemm<T>);
    QUANT_TYPES(MG_ATTR)
#undef MG_ATTR
    return e;
}

/* ---- prefill helpers ---- */
/* gather the f16 normed rows of the tokens routed to each expert (slot order) */
/* Prefill attention through cuBLAS: scores S[head][token][key] (f32, from f16 Q and K) ->
 * causal softmax -> P (f16) for the P.V GEMM. Block per (token, head); reads the row twice,
 * writes it once as f16: memory-bound and small next to the GEMMs, which do the arithmetic
 * on tensor cores (the split k_attn walks every key with warp reductions). */
__global__ void __launch_bounds__(256) k_softmax_causal(const float *__restrict__ S, __half *__restrict__ P, int npos, size_t hstride, int pos0,
                                                        float scale) {
    __shared__ float red[32];
    const int i = blockIdx.x, j = blockIdx.y, nv = pos0 + i + 1;
    const float *row = S + j * hstride + (size_t)i * npos;
    __half *out = P + j * hstride + (size_t)i * npos;
    float mx = -INFINITY;
    for (int p = threadIdx.x; p < nv; p += blockDim.x) mx = fmaxf(mx, row[p]);
    mx = warp_max(mx);
    if (threadIdx.x % WARP == 0) red[threadIdx.x / WARP] = mx;
    __syncthreads();
    mx = -INFINITY;
    for (int w = 0; w < (int)blockDim.x / WARP; w++) mx = fmaxf(mx, red[w]);
    __syncthreads();
    float sum = 0.f;
    for (int p = threadIdx.x; p < nv; p += blockDim.x) sum += expf((row[p] - mx) * scale);
    sum = warp_sum(sum);
    if (threadIdx.x % WARP == 0) red[threadIdx.x / WARP] = sum;
    __syncthreads();
    sum = 0.f;
    for (int w = 0; w < (int)blockDim.x / WARP; w++) sum += red[w];
    const float inv = 1.f / sum;
    for (int p = threadIdx.x; p < npos; p += blockDim.x) out[p] = __float2half(p < nv ? expf((row[p] - mx) * scale) * inv : 0.f);
}
/* the n x qdim query block of pqkv (row stride ld) as f16 */
__global__ void k_q16(const float *__restrict__ q, int ld, int qdim, __half *__restrict__ out) {
    const int i = blockIdx.y;
    for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < qdim; d += gridDim.x * blockDim.x) out[(size_t)i * qdim + d] = __float2half(q[(size_t)i * ld + d]);
}

__global__ void k_gather16(const __half *__restrict__ src, int E, const int *__restrict__ perm, __half *__restrict__ dst) {
    const int s = blockIdx.x, p = perm[s];
    __half *b = dst + (size_t)s * E;
    if (p < 0) {   /* a padding row of the batched expert GEMMs: zeros, so its outputs stay finite */
        for (int e = threadIdx.x; e < E; e += blockDim.x) b[e] = __float2half(0.f);
        return;
    }
    const __half *a = src + (size_t)p * E;
    for (int e = threadIdx.x; e < E; e += blockDim.x) b[e] = a[e];
}
/* SwiGLU over [slots][2F] (gate | up) -> f16 [slots][F] */
__global__ void k_swiglu16(const float *__restrict__ gu, int F, long n, __half *__restrict__ h) {
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    const long s = idx / F;
    const int f = (int)(idx % F);
    const float g = gu[s * 2 * F + f], u = gu[s * 2 * F + F + f];
    h[idx] = __float2half(g / (1.0f + expf(-g)) * u);
}
/* x[i] += sum_k w[i][k] * dout[slot(i,k)], fixed order */
__global__ void k_moe_combine(const float *__restrict__ dout, int E, const int *__restrict__ slot_of, const float *__restrict__ selw, int K,
                              float *__restrict__ x) {
    const int i = blockIdx.x;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < K; k++) s += selw[(size_t)i * K + k] * dout[(size_t)slot_of[i * K + k] * E + e];
        x[(size_t)i * E + e] += s;
    }
}

/* ======================================================================
 * Host side
 * ==================================================================== */
struct DT {                 /* a weight on the device, in its GGUF type */
    const uint8_t *p;
    int type, ncols;
    long nrows;
    size_t rb;
};
struct DLayer {
    float *attn_norm, *q_norm, *k_norm, *ffn_norm, *router;   /* f32 */
    DT q, k, v, o, gate, up, down;
    int F;
};

struct GpuModel {
    Config c;
    int n_ctx, qdim, kvdim, Fmax, Fpad, nch, ch_p, nch_p, use_q8, old_mmv;
    DLayer *L;
    DT emb, out;
    float *out_norm;
    char *warena;            /* all weights */
    size_t warena_bytes;
    char *sarena;            /* KV cache + scratch */
    size_t sarena_bytes;
    __half *kc, *vc;         /* [n_layer][n_ctx][kvdim] */
    cudaStream_t st;
    cublasHandle_t cb;
    float theta_scale;
    /* decode */
    int *d_io;               /* [0] token, [1] pos, [2] decode steps run (k_feed, k_publish) */
    int *h_io;               /* pinned, mapped: per step slot (steps % 2) the token and position, token < 0: fed (k_feed) */
    unsigned long long *h_amax, *d_amax;   /* h_amax: pinned, mapped: per step slot the step's argmax key (k_publish) */
    cudaEvent_t ev_step[2];  /* recorded after each decode step's graph, per slot */
    long steps;              /* decode steps launched (d_io[2] counts the same on the device) */
    int unread, qpos;        /* gpu_decode_queue: steps launched whose argmax is not read yet, the last one's position */
    float *x, *xn, *qkv, *att, *rlog, *selw, *h, *xd, *hd, *logits, *part;
    int8_t *xq, *hq;
    int *sel, *rec;
    float *recp, *precp, *h_recp;   /* the routers' own probabilities of their choice (--parity) */
    unsigned *rdone;             /* k_router's finished-block counter (zero between launches) */
    int *d_force, *d_force_on;   /* --parity: expert ids to use instead of the router's, [NB_MAX][n_layer][K] */
    const int *h_force;          /* host copy for the next gpu_eval, or NULL */
    int force_n, force_state;    /* tokens in h_force; what *d_force_on holds now */
    cudaGraphExec_t graph[2];   /* a decode step's graph per k_persist attention mode (AM_*; [0] for the kernel graph) */
    int pdl, pdl_now;        /* QWEN3MOE_PDL=0 turns programmatic dependent launch off (A/B); pdl_now: capturing decode */
    /* the persistent decode kernel (k_persist); QWEN3MOE_PERSIST=0 takes the per-kernel graph */
    int persist, pk_grid, pk_head, pk_chunked;   /* pk_head: the output head runs in it too (a type of its family); AM_ONE below position pk_chunked, AM_CHUNKED from it */
    int pk_fam;              /* the type family its instantiation serves (PK_FAM0..) */
    size_t pk_smem_bytes;
    PLayer *d_pl;
    unsigned *pk_bar;
    float *pk_ssx;
    long long *pk_acc;       /* PArgs.acc */
    uint8_t *pk_slab;        /* every layer's down weight as slabs (k_slab) */
    size_t pk_bytes;         /* the persistent kernel's own weights (folded router, slabs), for the VRAM count */
    float *pk_ssq;   /* [PK_SSMAX]: PArgs.ssq */
    float *rpart, *h2;       /* k_persist: the router's pieces (rpart[piece][expert]); D's x + W_o a */
    __half *pk_wx;           /* the router folded into D (pk_fold_setup): [layer][ne][E] f16 */
    __half *pk_mr;           /* [layer][ne][qdim] f16 */
    unsigned long long *pk_prof;   /* QWEN3MOE_PERSIST_PROF: phase times of the last step, reported by gpu_free */
    char persist_why[96];    /* why not, when it is off */
    /* prefill */
    float *px, *pxn, *pqkv, *prlog, *pselw, *gu, *dout, *ppart;
    __half *p16, *gx16, *h16, *wscr;
    int *psel, *prec, *perm, *slot_of, *d_pos, *ptok;
    size_t wscr_elems;
    int EG, OT;
    int dq_generic;          /* QWEN3MOE_DEQUANT=generic: the old one-thread-per-8 dequantizer (A/B timing) */
    int prof;                /* QWEN3MOE_PREFILL_PROF: per-chunk times of prefill's parts on stderr */
    std::vector<std::pair<int, std::pair<cudaEvent_t, cudaEvent_t>>> prof_ev;
    int *h_sel, *h_rec, *h_perm, *h_slot;   /* pinned */
    int4 *d_items;           /* k_expert_gemm's work items (expert, first slot row, rows), written by k_route */
    int *d_nitems, *d_cnt, *d_bad;   /* k_route: how many items, tokens per expert (profiling), an expert id out of range */
    int moe_dequant;         /* QWEN3MOE_MOE=dequant: experts through the f16 scratch and cuBLAS (A/B timing, fallback) */
    int SP;                  /* rows of the expert-slot buffers (perm, gx16, gu, h16, dout): 2 * NB_MAX * K */
    int gemm_loop;           /* QWEN3MOE_GEMM=loop: one cuBLAS call per expert (A/B timing) */
    int attn_split;          /* QWEN3MOE_ATTN=split: prefill attention with k_attn instead of cuBLAS */
    /* Expert weights are dequantized on st2 into two alternating halves of the weight scratch
     * while st runs the GEMMs of the other half (dequantization is bandwidth-bound, the small
     * GEMMs are not): ev_deq[b] = half b filled, ev_gemm[b] = half b's GEMMs done. */
    cudaStream_t st2, dq_st;
    cudaEvent_t ev_deq[2], ev_gemm[2], ev_start;
    const void **d_gptr, **h_gptr;   /* batched-GEMM pointer arrays [3 gemms][A,B,C][n_expert], device / pinned host */
    std::vector<int> pbase, rank;   /* per expert: first slot row in this layer, index in the pointer arrays */
    struct GBatch { int q0, nb, n; };   /* one batched GEMM: pointer-array entries q0.., nb experts, n columns */
    std::vector<GBatch> gbt;
    std::vector<int> gb0, gp0;          /* per expert group: first batch, first slot row (one past the end last) */
    long prof_calls, prof_rows;         /* QWEN3MOE_PREFILL_PROF: expert GEMM launches and slot rows in the chunk */
    float *logits_all;
    size_t logits_all_rows;
    std::vector<int> cnt, off;
};

template <int AM> static const void *persist_kernel_am(int fam) {
    return fam == 0 ? (const void *)k_persist<0, AM> : fam == 1 ? (const void *)k_persist<1, AM> : (const void *)k_persist<2, AM>;
}
static const void *persist_kernel(int fam, int am) { return am == AM_ONE ? persist_kernel_am<AM_ONE>(fam) : persist_kernel_am<AM_CHUNKED>(fam); }

/* The router folded into D (PK_RC's note): per layer Wx = W_r diag(ffn_norm) and
 * Mr = Wx W_o, both f16 (W_o dequantized to f16 as prefill does, the product on cuBLAS with
 * f32 accumulation). 1.5 MB a layer of Qwen3-30B-A3B, made once at load. */
__global__ void k_fold_wx(const float *__restrict__ wr, const float *__restrict__ g, int ne, int E, __half *__restrict__ wx) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)ne * E) wx[i] = __float2half(wr[i] * g[i % E]);
}
static int pk_fold_setup(GpuModel *g, char *err, size_t errlen) {
    const Config &c = g->c;
    const int E = c.n_embd, Q = g->qdim, NE = c.n_expert;
    __half *wo16 = nullptr;
    int rc = 0;
    CK(cudaMalloc(&g->pk_wx, sizeof(__half) * (size_t)c.n_layer * NE * E));
    CK(cudaMalloc(&g->pk_mr, sizeof(__half) * (size_t)c.n_layer * NE * Q));
    g->pk_bytes += sizeof(__half) * (size_t)c.n_layer * NE * ((size_t)E + Q);
    CK(cudaMalloc(&wo16, sizeof(__half) * (size_t)E * Q));
    const float one = 1.f, zero = 0.f;
    for (int l = 0; l < c.n_layer && !rc; l++) {
        const DLayer &L = g->L[l];
        __half *wx = g->pk_wx + (size_t)l * NE * E, *mr = g->pk_mr + (size_t)l * NE * Q;
        k_fold_wx<<<(unsigned)(((size_t)NE * E + 255) / 256), 256, 0, g->st>>>(L.router, L.ffn_norm, NE, E, wx);
        k_dequant_f16<<<(unsigned)(((size_t)(Q + 7) / 8 * E + 255) / 256), 256, 0, g->st>>>(L.o.p, L.o.type, Q, L.o.rb, E, wo16, Q);
        /* column-major: Mr^T (Q x NE) = Wo^T (Q x E, Wo's rows as columns) . Wx^T (E x NE) */
        if (cublasGemmEx(g->cb, CUBLAS_OP_N, CUBLAS_OP_N, Q, NE, E, &one, wo16, CUDA_R_16F, Q, wx, CUDA_R_16F, E, &zero, mr, CUDA_R_16F, Q,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
            seterr(err, errlen, "cublasGemmEx failed folding the router of layer %d into W_o", l);
            rc = 1;
        }
    }
    if (!rc && cudaStreamSynchronize(g->st) != cudaSuccess) {
        seterr(err, errlen, "folding the router: %s", cudaGetErrorString(cudaGetLastError()));
        rc = 1;
    }
    cudaFree(wo16);
    return rc;
}

/* Whether decode can take k_persist, and its per-layer table. Off (with the reason) for
 * what it does not serve; an error only when the device refuses what it asked for. */
static int persist_setup(GpuModel *g, char *err, size_t errlen) {
    const Config &c = g->c;
    const char *env = getenv("QWEN3MOE_PERSIST");
    const char *why = nullptr;
    g->persist = 0;
    int dev = 0, coop = 0, nsm = 0, optin = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
    CK(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    CK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    g->pk_smem_bytes = pk_smem(c.n_embd, g->qdim, c.n_expert);
    if (env && !strcmp(env, "0")) why = "QWEN3MOE_PERSIST=0";
    else if (!g->use_q8 || g->old_mmv) why = "QWEN3MOE_MMV set";
    else if (c.head_dim != PK_D) why = "head_dim is not 128";
    else if (c.n_embd % 256) why = "n_embd is not a multiple of 256";
    else if (c.n_expert_used > PK_MAXK) why = "more than 8 experts used";
    else if (c.n_expert > PK_THREADS) why = "more experts than the kernel's threads";
    else if (pk_rpieces(c.n_embd, g->qdim) > PK_RPMAX) why = "n_embd or the query width too large for the folded router";
    else if (!coop) why = "no cooperative launch on this device";
    else if (g->pk_smem_bytes > (size_t)optin) why = "shared memory too small";
    /* the first family that serves every layer weight */
    g->pk_fam = -1;
    for (int f = 0; f < PK_NFAM && g->pk_fam < 0 && !why; f++) {
        bool all = true;
        for (int l = 0; l < c.n_layer && all; l++) {
            const DLayer &L = g->L[l];
            const DT *ws[7] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
            for (const DT *d : ws) all = all && pk_serves(f, d->type);
        }
        if (all) g->pk_fam = f;
    }
    if (!why && g->pk_fam < 0) why = "weight types outside its families (Q4_K + Q6_K, Q8_0, Q4_0 + Q6_K)";
    for (int l = 0; l < c.n_layer && !why; l++)   /* norm_xl / norm_xq: norm_stage_w's cp.async path, each thread reading only its own copies */
        if (((uintptr_t)g->L[l].attn_norm | (uintptr_t)g->L[l].ffn_norm) & 15) why = "norm weights not 16-byte aligned";
    for (int l = 0; l < c.n_layer && !why; l++) {
        const DLayer &L = g->L[l];
        if (L.gate.type != L.up.type || L.gate.rb != L.up.rb) why = "gate and up of different types";
        if (L.F % 32) why = "expert FFN width not a multiple of 32";
    }
    if (!why) {
        for (int am = 0; am < 2; am++) {
            const void *kern = persist_kernel(g->pk_fam, am);
            CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)g->pk_smem_bytes));
            int occ = 0;
            CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, PK_THREADS, g->pk_smem_bytes));
            if (occ < 1) why = "the kernel does not fit an SM";
        }
        g->pk_grid = nsm;   /* one block an SM: co-resident (the cooperative launch checks it) */
        if (nsm > PK_SSMAX) why = "more SMs than F's norm stages partials for (PK_SSMAX)";
        /* fewer blocks, for tests: a phase's units then loop over the grid (A's head halves,
         * v groups on the blocks that also hold a head) */
        if (const char *ge = getenv("QWEN3MOE_PERSIST_GRID")) {
            char *end = nullptr;
            const long v = strtol(ge, &end, 10);
            /* at least 2: a head's two halves once waited on each other in A (no longer since
             * P105, but a grid of 1 has not been run since) */
            if (end == ge || *end || v < 2 || v > nsm) why = "QWEN3MOE_PERSIST_GRID is not a block count from 2 to the SM count";
            else g->pk_grid = (int)v;
        }
        g->pk_chunked = PK_DSUB;
        if (const char *dp = getenv("QWEN3MOE_PERSIST_CHUNKED")) {   /* chunked attention from an earlier position on (tests: 0) */
            char *end = nullptr;
            const long v = strtol(dp, &end, 10);
            if (end == dp || *end || v < 0) why = "QWEN3MOE_PERSIST_CHUNKED is not a position (0 or more)";
            else g->pk_chunked = (int)std::min(v, (long)PK_DSUB);   /* AM_ONE's items stage PK_DSUB positions at most */
        }
    }
    /* F's pipe and slab geometry per layer (pk_ffn): a gate/up row a pipe slot, the slab
     * rows that fit beside the pipe staged early, the rest in the pipe's room once it is done */
    std::vector<int> fcap(c.n_layer), dpr(c.n_layer);
    size_t slab_bytes = 0;
    for (int l = 0; l < c.n_layer && !why; l++) {
        const DLayer &L = g->L[l];
        const int cb = slab_cb(L.down.type), rpw = c.n_embd / PK_WARPS;
        const size_t need = (L.gate.rb + 31 + 15) / 16 * 16;   /* pipe_fits' */
        fcap[l] = (int)(((size_t)(pipe_for(L.gate.type, PK_FPIPE) + 1) * need + 7) / 8 + 15) / 16 * 16;
        if (8 * fcap[l] > PK_WB) fcap[l] = PK_CAP(8);   /* no pipe: rows_qp stages the rows in chunks, and the slab rows wait */
        dpr[l] = std::min(rpw, (PK_WB - 8 * fcap[l]) / std::max(cb, 1) / 16 * 16);
        if (!cb) why = "a down weight type without a slab layout";
        slab_bytes += (size_t)c.n_expert * ((L.F + 63) / 64) * c.n_embd * cb;
    }
    if (!why && cudaMalloc(&g->pk_slab, slab_bytes) != cudaSuccess) {
        cudaGetLastError();
        g->pk_slab = nullptr;
        why = "no device memory for the down weights as slabs";
    }
    if (!why) g->pk_bytes += slab_bytes;
    if (why) {
        snprintf(g->persist_why, sizeof g->persist_why, "%s", why);
        return 0;
    }
    std::vector<PLayer> pl(c.n_layer);
    uint8_t *slab = g->pk_slab;
    for (int l = 0; l < c.n_layer; l++) {
        const DLayer &L = g->L[l];
        const DT *ws[7] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
        PLayer &p = pl[l];
        for (int i = 0; i < 7; i++) { p.w[i] = ws[i]->p; p.rb[i] = ws[i]->rb; p.t[i] = ws[i]->type; }
        p.attn_norm = L.attn_norm; p.q_norm = L.q_norm; p.k_norm = L.k_norm; p.ffn_norm = L.ffn_norm;
        p.kc = g->kc + (size_t)l * g->n_ctx * g->kvdim;
        p.vc = g->vc + (size_t)l * g->n_ctx * g->kvdim;
        p.F = L.F;
        const int cb = slab_cb(L.down.type);
        const size_t n = (size_t)c.n_expert * ((L.F + 63) / 64) * c.n_embd;
        k_slab<<<(unsigned)((n + 255) / 256), 256, 0, g->st>>>(L.down.p, L.down.type, L.down.rb, L.F, c.n_embd, c.n_expert, slab);
        CK(cudaGetLastError());
        p.ds = slab; p.dcb = cb; p.dpr = dpr[l]; p.fcap = fcap[l];
        slab += n * cb;
    }
    CK(cudaStreamSynchronize(g->st));
    CK(cudaMalloc(&g->d_pl, sizeof(PLayer) * c.n_layer));
    CK(cudaMemcpy(g->d_pl, pl.data(), sizeof(PLayer) * c.n_layer, cudaMemcpyHostToDevice));
    if (pk_fold_setup(g, err, errlen)) return 1;
    if (getenv("QWEN3MOE_PERSIST_PROF") && PK_PHASES * c.n_layer + 1 < PK_PROF_MAXB - 1 && PK_MARKS * c.n_layer <= PK_PROF_MAXB) {   /* barrier rows, then the head's end row */
        const size_t n = (size_t)PK_PROF_MAXB * (g->pk_grid + 2);
        CK(cudaMalloc(&g->pk_prof, n * sizeof(unsigned long long)));
        CK(cudaMemset(g->pk_prof, 0, n * sizeof(unsigned long long)));
    }
    g->pk_head = pk_serves(g->pk_fam, g->out.type) && g->out.ncols == c.n_embd;
    g->persist = 1;
    return 0;
}

/* One decode step's layers as one cooperative launch (the counter zeroed first), with the
 * attention of mode am (AM_ONE or AM_CHUNKED). */
static int launch_persist(GpuModel *g, int am, char *err, size_t errlen) {
    const Config &c = g->c;
    PArgs a;
    memset(&a, 0, sizeof a);
    a.L = g->d_pl;
    a.nl = c.n_layer; a.E = c.n_embd; a.nh = c.n_head; a.nkv = c.n_head_kv; a.qdim = g->qdim; a.kvdim = g->kvdim;
    a.ne = c.n_expert; a.K = c.n_expert_used; a.nch = std::max(g->nch, 64);
    a.eps = c.rms_eps; a.theta_scale = g->theta_scale; a.scale = 1.0f / sqrtf((float)c.head_dim);
    a.x = g->x; a.qkv = g->qkv; a.part = g->part; a.rpart = g->rpart;
    a.h2 = g->h2; a.acc = g->pk_acc; a.rwx = g->pk_wx; a.rmr = g->pk_mr;
    a.aq = g->xq; a.ad = g->xd;
    a.bar = g->pk_bar; a.kvc = g->pk_bar + 1; a.ssx = g->pk_ssx;
    a.ssq = g->pk_ssq;
    a.pos_dev = g->d_io + 1;
    a.rec = g->rec; a.recp = g->recp; a.force = g->d_force; a.force_on = g->d_force_on;
    a.prof = g->pk_prof;
    a.head = g->pk_head;
    a.nvocab = c.n_vocab; a.out_t = g->out.type; a.out_w = g->out.p; a.out_rb = g->out.rb; a.out_norm = g->out_norm;
    a.logits = g->logits; a.amax = g->d_amax;
    CK(cudaMemsetAsync(g->pk_bar, 0, sizeof(unsigned) * (1 + (size_t)c.n_head_kv), g->st));   /* the barrier and the KV heads' counts */
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = g->pk_grid;
    cfg.blockDim = PK_THREADS;
    cfg.dynamicSmemBytes = g->pk_smem_bytes;
    cfg.stream = g->st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeCooperative;
    at[0].val.cooperative = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    void *args[] = {&a};
    CK(cudaLaunchKernelExC(&cfg, persist_kernel(g->pk_fam, am), args));
    return 0;
}

extern "C" int gpu_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

/* Bump allocator over one device allocation: pass 1 (base NULL) sizes it. */
struct Bump {
    char *base;
    size_t off;
    template <class T> T *take(size_t n) {
        off = (off + 255) & ~(size_t)255;
        T *p = base ? (T *)(base + off) : nullptr;
        off += n * sizeof(T);
        return p;
    }
};

static void plan_scratch(GpuModel *g, Bump &b) {
    const Config &c = g->c;
    const int E = c.n_embd, K = c.n_expert_used, NE = c.n_expert, NL = c.n_layer, V = c.n_vocab, D = c.head_dim, nh = c.n_head;
    const int qkvw = g->qdim + 2 * g->kvdim;
    const int wide = std::max(E, std::max(g->qdim, K * g->Fpad));
    g->kc = b.take<__half>((size_t)NL * g->n_ctx * g->kvdim);
    g->vc = b.take<__half>((size_t)NL * g->n_ctx * g->kvdim);
    g->d_io = b.take<int>(4);
    g->d_amax = b.take<unsigned long long>(1);
    g->x = b.take<float>(E);
    g->h2 = b.take<float>(E);
    g->xn = b.take<float>(E);
    g->xq = b.take<int8_t>(wide + 256);
    g->xd = b.take<float>(2 * (wide / 32) + 8);   /* the persistent kernel keeps a float2 per group (warp_quant2) */
    g->qkv = b.take<float>(qkvw);
    g->att = b.take<float>(g->qdim);
    g->rlog = b.take<float>(NE);
    g->sel = b.take<int>(K);
    g->selw = b.take<float>(K);
    g->rec = b.take<int>((size_t)NL * K);
    g->recp = b.take<float>((size_t)NL * K);
    g->d_force = b.take<int>((size_t)NB_MAX * NL * K);
    g->d_force_on = b.take<int>(1);
    g->rdone = b.take<unsigned>(1);
    g->h = b.take<float>((size_t)K * g->Fpad);
    g->hq = b.take<int8_t>((size_t)K * g->Fpad + 256);
    g->hd = b.take<float>(2 * ((size_t)K * g->Fpad / 32) + 8);   /* float2 per group in the persistent kernel */
    g->logits = b.take<float>(V);
    g->part = b.take<float>((size_t)nh * std::max(g->nch, 64) * (D + 2));   /* k_persist: up to 64 chunks at any depth */
    g->pk_bar = b.take<unsigned>(1 + (size_t)c.n_head_kv);
    g->pk_ssx = b.take<float>(2 * ((size_t)nh + c.n_head_kv));
    g->pk_ssq = b.take<float>(PK_SSMAX);
    g->pk_acc = b.take<long long>(E);
    g->rpart = b.take<float>((size_t)NE * pk_rpieces(E, g->qdim));
    /* prefill, NB_MAX tokens */
    const size_t NB = NB_MAX, S = NB * K;
    g->px = b.take<float>(NB * E);
    g->pxn = b.take<float>(NB * E);
    g->p16 = b.take<__half>(NB * std::max(E, g->qdim));
    g->pqkv = b.take<float>(NB * qkvw);
    g->prlog = b.take<float>(NB * NE);
    g->psel = b.take<int>(S);
    g->prec = b.take<int>(S * c.n_layer);    /* every layer's, copied back once per chunk */
    g->precp = b.take<float>(S * c.n_layer);
    g->pselw = b.take<float>(S);
    /* expert slots: room for every expert's rows padded to the largest count (batched GEMMs) */
    const size_t SP = 2 * S;
    g->SP = (int)SP;
    g->perm = b.take<int>(SP);
    g->slot_of = b.take<int>(S);
    g->d_gptr = b.take<const void *>((size_t)9 * NE);
    g->d_items = b.take<int4>((size_t)NE + S / MG_BN + 1);
    g->d_nitems = b.take<int>(1);
    g->d_bad = b.take<int>(1);
    g->d_cnt = b.take<int>((size_t)NE * NL);
    g->d_pos = b.take<int>(4);
    g->ptok = b.take<int>(NB);
    g->gx16 = b.take<__half>(SP * E);
    g->gu = b.take<float>(SP * 2 * g->Fmax);
    g->h16 = b.take<__half>(SP * g->Fmax);
    g->dout = b.take<float>(SP * E);
    g->ppart = b.take<float>(NB * nh * g->nch_p * (D + 2));
    g->wscr = b.take<__half>(g->wscr_elems);
}

static size_t dt_bytes(const Tensor *t) { return t->nbytes; }

static void progress(size_t done, size_t total, int *last) {
    const int pct = total ? (int)(100.0 * done / total) : 100;
    if (pct == *last) return;
    *last = pct;
    char bar[41];
    const int fill = pct * 40 / 100;
    for (int i = 0; i < 40; i++) bar[i] = i < fill ? '#' : ' ';
    bar[40] = 0;
    fprintf(stderr, "\rloading to GPU [%s] %3d%% %.1f/%.1f GiB", bar, pct, done / 1073741824.0, total / 1073741824.0);
    if (done >= total) fprintf(stderr, "\n");
    fflush(stderr);
}

/* QWEN3MOE_PERSIST_PROF: per phase of the last decode step, averaged over the layers: how
 * long its slowest block took (from block 0 passing the barrier before), and how long the
 * barrier took to pass once the slowest block had arrived. A phase that ends with no
 * barrier (A; C under AM_ONE) has block 0's own end as its "pass", so the phases' sum
 * overlaps there: the total is the step's time, not that sum. */
static void persist_prof_report(GpuModel *g) {
    const int G = g->pk_grid, NL = g->c.n_layer, P = PK_PHASES, nbar = P * NL - 1;
    std::vector<unsigned long long> h((size_t)PK_PROF_MAXB * (G + 2));
    if (cudaMemcpy(h.data(), g->pk_prof, h.size() * sizeof(h[0]), cudaMemcpyDeviceToHost) != cudaSuccess) return;
    const unsigned long long *pass = h.data() + (size_t)PK_PROF_MAXB * G;   /* pass[0] = start, pass[b+1] = barrier b passed */
    static const char *names[P] = {"A norm+qkv+rope", "B attention", "C combine", "D o-proj", "E (in D and F)", "F topk+gate/up+down", "G (F's barrier)"};
    double work[P] = {0}, wait[P] = {0}, spread[P] = {0};
    for (int b = 0; b < nbar; b++) {
        unsigned long long mx = 0, mn = ~0ull;
        for (int i = 0; i < G; i++) { mx = std::max(mx, h[(size_t)b * G + i]); mn = std::min(mn, h[(size_t)b * G + i]); }
        /* %globaltimer ticks coarsely: a block's arrival can read later than block 0's pass
         * of the same barrier; such a pass counts as 0, not as an unsigned wrap-around */
        const auto ns = [](unsigned long long t1, unsigned long long t0) { return t1 > t0 ? (double)(t1 - t0) : 0.0; };
        work[b % P] += ns(mx, pass[b]) / NL;
        spread[b % P] += ns(mx, mn) / NL;
        wait[b % P] += ns(pass[b + 1], mx) / NL;
    }
    fprintf(stderr, "persistent kernel, last step (us per layer): phase, slowest block, first-to-last arrival, barrier pass\n");
    for (int p = 0; p < P; p++) fprintf(stderr, "  %-16s %7.2f %7.2f %7.2f\n", names[p], work[p] / 1e3, spread[p] / 1e3, wait[p] / 1e3);
    /* block 0's thread 0 inside phases A and F (pk_mark and rows_qp's stamps for warp 0's
     * first group), in the order they happen, from the phase's barrier pass; mark 10 (A's
     * "issue") is not shown: A's first rows were issued before the barrier. B's marks are
     * the block of item 0's, from block 0's end of A. */
    static const struct { int mark, phase; const char *what; } mk[] = {
        {6, 0, "A: norm"}, {11, 0, "rows landed"}, {7, 0, "first rows"},
        {0, 5, "F: logits"}, {1, 5, "ranks"}, {3, 5, "top-k"}, {8, 5, "rows asked"}, {2, 5, "norm"}, {9, 5, "first row landed"},
        {4, 5, "gate/up done"}, {16, 5, "h"}, {17, 5, "h int8"}, {18, 5, "dots"}, {5, 5, "done"}, {19, 5, "fenced"},
        {12, 1, "B (item 0's block): q"}, {13, 1, "staged"}, {14, 1, "max"}, {15, 1, "PV"}};
    fprintf(stderr, "  block 0, warp 0, us into the phase:");
    for (const auto &k : mk) {
        double t = 0;
        for (int l = 0; l < NL; l++) {
            const unsigned long long m = h[(size_t)PK_PROF_MAXB * (G + 1) + (size_t)l * PK_MARKS + k.mark], p0 = pass[P * l + k.phase];
            t += m ? (double)(m - p0) / NL : 0.0;
        }
        fprintf(stderr, "%s %s %.2f", k.mark == 0 || k.mark == 12 ? "\n   " : k.mark == 6 ? "" : ",", k.what, t / 1e3);
    }
    fprintf(stderr, "\n");
    fprintf(stderr, "  total %.1f us per layer, %.3f ms the step's layers\n", (double)(pass[nbar] - pass[0]) / NL / 1e3, (double)(pass[nbar] - pass[0]) / 1e6);
    unsigned long long hend = 0;   /* the head's end per block (k_persist's last row; 0 while no step has had a head) */
    for (int i = 0; i < G; i++) hend = std::max(hend, h[(size_t)(PK_PROF_MAXB - 1) * G + i]);
    if (hend) fprintf(stderr, "  H norm+head+argmax %.1f us (from its barrier's pass to the last block's end)\n", (hend > pass[nbar + 1] ? hend - pass[nbar + 1] : 0) / 1e3);
}

extern "C" void gpu_free(GpuModel *g) {
    if (!g) return;
    if (g->pk_prof) { persist_prof_report(g); cudaFree(g->pk_prof); }
    for (int i = 0; i < 2; i++)
        if (g->graph[i]) cudaGraphExecDestroy(g->graph[i]);
    if (g->cb) cublasDestroy(g->cb);
    if (g->st) cudaStreamDestroy(g->st);
    if (g->st2) cudaStreamDestroy(g->st2);
    for (int i = 0; i < 2; i++) {
        if (g->ev_deq[i]) cudaEventDestroy(g->ev_deq[i]);
        if (g->ev_gemm[i]) cudaEventDestroy(g->ev_gemm[i]);
    }
    if (g->ev_start) cudaEventDestroy(g->ev_start);
    for (int i = 0; i < 2; i++)
        if (g->ev_step[i]) cudaEventDestroy(g->ev_step[i]);
    cudaFree(g->warena);
    cudaFree(g->sarena);
    cudaFree(g->d_pl);
    cudaFree(g->pk_wx);
    cudaFree(g->pk_slab);
    cudaFree(g->pk_mr);
    cudaFree(g->logits_all);
    cudaFreeHost(g->h_io);
    cudaFreeHost(g->h_amax);
    cudaFreeHost(g->h_sel);
    cudaFreeHost(g->h_rec);
    cudaFreeHost(g->h_recp);
    cudaFreeHost(g->h_perm);
    cudaFreeHost(g->h_gptr);
    cudaFreeHost(g->h_slot);
    delete[] g->L;
    delete g;
}

extern "C" GpuModel *gpu_load(const Weights *w, int n_ctx, int show_progress, char *err, size_t errlen) {
    const Config &c = w->cfg;
    if (gpu_device_count() <= 0) { seterr(err, errlen, "no CUDA device found"); return nullptr; }
    if (n_ctx < 1) { seterr(err, errlen, "context size %d is not positive", n_ctx); return nullptr; }
    const int D = c.head_dim;
    if (D % 32 != 0 || D > 256 || D < 32) {
        seterr(err, errlen, "head_dim %d is not supported by the GPU path (needs a multiple of 32, at most 256)", D);
        return nullptr;
    }
    if (c.n_head % c.n_head_kv != 0) { seterr(err, errlen, "n_head %d is not a multiple of n_head_kv %d", c.n_head, c.n_head_kv); return nullptr; }
    if (c.n_embd % 32 != 0) { seterr(err, errlen, "n_embd %d is not a multiple of 32 (GPU path)", c.n_embd); return nullptr; }
    if (c.n_expert_used > 64 || c.n_expert > 4096) { seterr(err, errlen, "expert counts (%d used of %d) too large for the GPU path", c.n_expert_used, c.n_expert); return nullptr; }

    GpuModel *g = new GpuModel();
    g->c = c;
    g->n_ctx = n_ctx;
    g->qdim = c.n_head * D;
    g->kvdim = c.n_head_kv * D;
    g->L = new DLayer[c.n_layer]();
    const char *mm = getenv("QWEN3MOE_MMV");
    g->use_q8 = !(mm && !strcmp(mm, "f32"));
    g->old_mmv = mm && !strcmp(mm, "direct");
    const char *pd = getenv("QWEN3MOE_PDL");
    g->pdl = !(pd && !strcmp(pd, "0"));
    int Fmax = 0;
    for (int l = 0; l < c.n_layer; l++) Fmax = std::max(Fmax, w->layers[l].n_ff);
    g->Fmax = Fmax;
    g->Fpad = (Fmax + 31) / 32 * 32;
    g->nch = cdiv(n_ctx, ATT_CH);
    g->ch_p = std::max(ATT_CH, (cdiv(n_ctx, 8) + 3) / 4 * 4);
    g->nch_p = cdiv(n_ctx, g->ch_p);
    g->theta_scale = powf(c.rope_theta, -2.0f / D);

    /* ---- weights: one arena; small tensors as f32 ---- */
    std::vector<const Tensor *> big;
    auto check = [&](const Tensor *t) -> bool {
        if (!type_supported(t->type)) {
            const gguf_type_traits *tt = gguf_type_get(t->type);
            seterr(err, errlen, "tensor '%s' has type %s, which the GPU path does not support", t->name, tt ? tt->name : "?");
            return false;
        }
        return true;
    };
    size_t wbytes = 0;
    auto add_big = [&](const Tensor *t) { big.push_back(t); wbytes = (wbytes + 255) & ~(size_t)255; wbytes += dt_bytes(t); };
    auto add_small = [&](const Tensor *t) { wbytes = (wbytes + 255) & ~(size_t)255; wbytes += (size_t)t->ne[0] * t->ne[1] * 4; };
    bool ok = true;
    ok = ok && check(&w->token_embd) && check(&w->output);
    add_big(&w->token_embd);
    const bool tied = w->output.data == w->token_embd.data;
    if (!tied) add_big(&w->output);
    add_small(&w->output_norm);
    for (int l = 0; l < c.n_layer && ok; l++) {
        const Layer &L = w->layers[l];
        const Tensor *bigs[] = {&L.attn_q, &L.attn_k, &L.attn_v, &L.attn_output, &L.ffn_gate_exps, &L.ffn_up_exps, &L.ffn_down_exps};
        const Tensor *smalls[] = {&L.attn_norm, &L.attn_q_norm, &L.attn_k_norm, &L.ffn_norm, &L.ffn_gate_inp};
        for (const Tensor *t : bigs) { ok = ok && check(t); add_big(t); }
        for (const Tensor *t : smalls) { ok = ok && check(t); add_small(t); }
    }
    if (!ok) { gpu_free(g); return nullptr; }
    g->warena_bytes = wbytes + 512;   /* staged loads may read up to 15 bytes past a row */

    /* ---- scratch plan ---- */
    {
        const size_t E = c.n_embd;
        size_t need = std::max((size_t)(g->qdim + 2 * g->kvdim) * E, (size_t)g->qdim * E);
        need = std::max(need, (size_t)3 * Fmax * E);
        const size_t budget = (size_t)256 << 20;   /* elements: 512 MB of f16 */
        size_t ws = std::max(need, budget);
        /* two halves of EG experts each (see st2): 2 x 512 MB for 30B-A3B, since halving the
         * group instead doubles the batched GEMM launches and costs more than the overlap gains */
        g->EG = (int)std::max((size_t)1, std::min((size_t)c.n_expert, ws / ((size_t)3 * Fmax * E)));
        need = std::max(need, (size_t)6 * g->EG * Fmax * E);
        ws = std::max(ws, need);
        g->OT = (int)std::min((size_t)c.n_vocab, ws / E);
        g->wscr_elems = ws;
    }
    Bump b0 = {nullptr, 0};
    plan_scratch(g, b0);
    g->sarena_bytes = b0.off + 256;

    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) { seterr(err, errlen, "cudaMemGetInfo failed"); gpu_free(g); return nullptr; }
    const size_t need = g->warena_bytes + g->sarena_bytes + ((size_t)400 << 20);   /* + cuBLAS workspace and context */
    if (need > fr) {
        const double kv = 2.0 * c.n_layer * (double)n_ctx * g->kvdim * 2;
        seterr(err, errlen, "the model needs %.2f GiB on the GPU (weights %.2f, KV cache %.2f for -c %d, scratch %.2f), %.2f GiB free; try a smaller -c",
               need / 1073741824.0, g->warena_bytes / 1073741824.0, kv / 1073741824.0, n_ctx, (g->sarena_bytes - kv) / 1073741824.0,
               fr / 1073741824.0);
        gpu_free(g);
        return nullptr;
    }
#define LCK(call)                                                                                      \
    do {                                                                                               \
        cudaError_t e_ = (call);                                                                       \
        if (e_ != cudaSuccess) {                                                                       \
            seterr(err, errlen, "%s failed: %s", #call, cudaGetErrorString(e_));                       \
            gpu_free(g);                                                                               \
            return nullptr;                                                                            \
        }                                                                                              \
    } while (0)
    LCK(set_smem_attrs());
    LCK(cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking));
    LCK(cudaStreamCreateWithFlags(&g->st2, cudaStreamNonBlocking));
    for (int i = 0; i < 2; i++) {
        LCK(cudaEventCreateWithFlags(&g->ev_deq[i], cudaEventDisableTiming));
        LCK(cudaEventCreateWithFlags(&g->ev_gemm[i], cudaEventDisableTiming));
    }
    LCK(cudaEventCreateWithFlags(&g->ev_start, cudaEventDisableTiming));
    g->dq_st = g->st;
    if (cublasCreate(&g->cb) != CUBLAS_STATUS_SUCCESS) { seterr(err, errlen, "cublasCreate failed"); gpu_free(g); return nullptr; }
    cublasSetStream(g->cb, g->st);
    {
        const char *dq = getenv("QWEN3MOE_DEQUANT");
        g->dq_generic = dq && !strcmp(dq, "generic");
        g->prof = getenv("QWEN3MOE_PREFILL_PROF") != nullptr;
        const char *gm = getenv("QWEN3MOE_GEMM");
        g->gemm_loop = gm && !strcmp(gm, "loop");
        const char *at = getenv("QWEN3MOE_ATTN");
        g->attn_split = at && !strcmp(at, "split");
        const char *mo = getenv("QWEN3MOE_MOE");
        g->moe_dequant = mo && !strcmp(mo, "dequant");
    }
    LCK(cudaMalloc(&g->warena, g->warena_bytes));
    LCK(cudaMalloc(&g->sarena, g->sarena_bytes));
    Bump b1 = {g->sarena, 0};
    plan_scratch(g, b1);
    LCK(cudaHostAlloc(&g->h_io, 4 * sizeof(int), cudaHostAllocMapped));
    LCK(cudaMemset(g->d_io, 0, 4 * sizeof(int)));   /* d_io[2] counts decode steps from 0, as g->steps does */
    LCK(cudaHostAlloc(&g->h_amax, 2 * sizeof(unsigned long long), cudaHostAllocMapped));
    for (int i = 0; i < 2; i++) LCK(cudaEventCreateWithFlags(&g->ev_step[i], cudaEventDisableTiming));
    LCK(cudaMallocHost(&g->h_sel, sizeof(int) * NB_MAX * c.n_expert_used));
    LCK(cudaMallocHost(&g->h_rec, sizeof(int) * NB_MAX * c.n_expert_used * c.n_layer));
    LCK(cudaMallocHost(&g->h_recp, sizeof(float) * NB_MAX * c.n_expert_used * c.n_layer));
    LCK(cudaMemsetAsync(g->d_force_on, 0, sizeof(int), g->st));
    LCK(cudaMemsetAsync(g->rdone, 0, sizeof(unsigned), g->st));
    LCK(cudaMallocHost(&g->h_perm, sizeof(int) * 2 * NB_MAX * c.n_expert_used));
    LCK(cudaMallocHost(&g->h_gptr, sizeof(void *) * 9 * c.n_expert));
    g->pbase.assign(c.n_expert, 0);
    g->rank.assign(c.n_expert, 0);
    LCK(cudaMallocHost(&g->h_slot, sizeof(int) * NB_MAX * c.n_expert_used));
    /* the cache starts zeroed so that no read of an unwritten slot can produce NaN */
    LCK(cudaMemsetAsync(g->kc, 0, sizeof(__half) * (size_t)c.n_layer * n_ctx * g->kvdim, g->st));
    LCK(cudaMemsetAsync(g->vc, 0, sizeof(__half) * (size_t)c.n_layer * n_ctx * g->kvdim, g->st));

    /* ---- upload ---- */
    size_t off = 0, done = 0;
    int last = -1;
    std::vector<float> tmp;
    auto up_big = [&](const Tensor *t, DT &d) -> bool {
        off = (off + 255) & ~(size_t)255;
        d.p = (const uint8_t *)g->warena + off;
        d.type = (int)t->type;
        d.ncols = (int)t->ne[0];
        d.nrows = (long)(t->nbytes / t->row_bytes);
        d.rb = t->row_bytes;
        const size_t chunk = (size_t)64 << 20;
        for (size_t o = 0; o < t->nbytes; o += chunk) {
            const size_t n = std::min(chunk, t->nbytes - o);
            if (cudaMemcpy(g->warena + off + o, (const char *)t->data + o, n, cudaMemcpyHostToDevice) != cudaSuccess) {
                seterr(err, errlen, "uploading '%s' failed", t->name);
                return false;
            }
            done += n;
            if (show_progress) progress(done, wbytes, &last);
        }
        off += t->nbytes;
        return true;
    };
    auto up_small = [&](const Tensor *t, float *&d) -> bool {
        off = (off + 255) & ~(size_t)255;
        d = (float *)(g->warena + off);
        const size_t n = (size_t)t->ne[0] * t->ne[1];
        tmp.resize(n);
        for (long r = 0; r < t->ne[1]; r++)
            gguf_dequant_row(t->type, (const char *)t->data + (size_t)r * t->row_bytes, tmp.data() + (size_t)r * t->ne[0], t->ne[0]);
        if (cudaMemcpy(d, tmp.data(), n * 4, cudaMemcpyHostToDevice) != cudaSuccess) {
            seterr(err, errlen, "uploading '%s' failed", t->name);
            return false;
        }
        off += n * 4;
        done += t->nbytes;
        if (show_progress) progress(done, wbytes, &last);
        return true;
    };
    ok = up_big(&w->token_embd, g->emb);
    if (ok) {
        if (tied) g->out = g->emb;
        else ok = up_big(&w->output, g->out);
    }
    ok = ok && up_small(&w->output_norm, g->out_norm);
    for (int l = 0; l < c.n_layer && ok; l++) {
        const Layer &L = w->layers[l];
        DLayer &D_ = g->L[l];
        D_.F = L.n_ff;
        ok = up_big(&L.attn_q, D_.q) && up_big(&L.attn_k, D_.k) && up_big(&L.attn_v, D_.v) && up_big(&L.attn_output, D_.o) &&
             up_big(&L.ffn_gate_exps, D_.gate) && up_big(&L.ffn_up_exps, D_.up) && up_big(&L.ffn_down_exps, D_.down) &&
             up_small(&L.attn_norm, D_.attn_norm) && up_small(&L.attn_q_norm, D_.q_norm) && up_small(&L.attn_k_norm, D_.k_norm) &&
             up_small(&L.ffn_norm, D_.ffn_norm) && up_small(&L.ffn_gate_inp, D_.router);
    }
    if (show_progress && ok && done < wbytes) progress(wbytes, wbytes, &last);
    if (!ok) { gpu_free(g); return nullptr; }
    LCK(cudaStreamSynchronize(g->st));
    if (persist_setup(g, err, errlen)) { gpu_free(g); return nullptr; }
    g->cnt.assign(c.n_expert, 0);
    g->off.assign(c.n_expert + 1, 0);
    return g;
#undef LCK
}

static bool expert_gemm_serves(const DT &w) {
#define MG_SERVES(T) case T:
    switch (w.type) { QUANT_TYPES(MG_SERVES) return w.ncols % MG_BK == 0; default: return false; }
#undef MG_SERVES
}
/* whether prefill multiplies this layer's experts with k_expert_gemm */
static bool experts_fused(const GpuModel *g, const DLayer &L) {
    return !g->moe_dequant && L.gate.type == L.up.type && expert_gemm_serves(L.gate) && expert_gemm_serves(L.down);
}

extern "C" int gpu_info(GpuModel *g, GpuInfo *info) {
    memset(info, 0, sizeof *info);
    int dev = 0;
    cudaDeviceProp p;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) return -1;
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->vram_total = p.totalGlobalMem;
    info->vram_used_model = g ? g->warena_bytes + g->sarena_bytes + g->pk_bytes + (g->logits_all ? g->logits_all_rows * g->c.n_vocab * 4 : 0) : 0;
    if (g && g->persist)
        snprintf(info->decode, sizeof info->decode, "persistent kernel, %d blocks, %s, attention chunked from position %d", g->pk_grid, pk_fam_name[g->pk_fam],
                 g->pk_chunked);
    else if (g) snprintf(info->decode, sizeof info->decode, "kernel graph (%s)", g->persist_why);
    if (g) {
        int nf = 0;
        for (int l = 0; l < g->c.n_layer; l++) nf += experts_fused(g, g->L[l]);
        if (nf == g->c.n_layer) snprintf(info->prefill, sizeof info->prefill, "expert GEMM on quantized weights");
        else if (g->moe_dequant) snprintf(info->prefill, sizeof info->prefill, "experts dequantized to f16 for cuBLAS (QWEN3MOE_MOE=dequant)");
        else snprintf(info->prefill, sizeof info->prefill, "expert GEMM on quantized weights in %d of %d layers, f16 + cuBLAS in the rest", nf, g->c.n_layer);
    }
    return 0;
}

extern "C" double gpu_copy_bandwidth(GpuModel *g) {
    (void)g;
    const size_t n = (size_t)512 << 20;
    void *a = nullptr, *b = nullptr;
    if (cudaMalloc(&a, n) != cudaSuccess) return 0;
    if (cudaMalloc(&b, n) != cudaSuccess) { cudaFree(a); return 0; }
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    float best = 1e30f;
    for (int i = 0; i < 5; i++) {
        cudaEventRecord(e0);
        cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        best = std::min(best, ms);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * n / (best * 1e-3);
}

/* ---------------------------------------------------------------- forward */
/* A launch on g->st, with the programmatic-serialization attribute while decode is
 * captured (see pdl_enter: every kernel launched so waits for its predecessor first). */
template <typename... KP, typename... A>
static cudaError_t launch_k(GpuModel *g, void (*k)(KP...), dim3 grid, dim3 block, size_t smem, A &&...args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = g->st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = g->pdl_now ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, std::forward<A>(args)...);
}

/* nw: xf is the residual, to be RMS-normalized with nw by every block (k_mmv2 only) */
static int launch_mmv(GpuModel *g, const DT *const *w, float *const *y, const int *accum, int nseg, const float *xf, const int8_t *xq,
                      const float *xd, unsigned long long *amax, char *err, size_t errlen, const float *nw = nullptr) {
    const int R = 2, rows_per_block = (NTHR / WARP) * R;
    MVArgs a;
    memset(&a, 0, sizeof a);
    int blocks = 0;
    for (int i = 0; i < nseg; i++) {
        MVSeg &s = a.s[i];
        s.w = w[i]->p;
        s.y = y[i];
        s.rb = w[i]->rb;
        s.type = w[i]->type;
        s.ncols = w[i]->ncols;
        s.nrows = (int)w[i]->nrows;
        s.accum = accum ? accum[i] : 0;
        s.blk0 = blocks;
        blocks += cdiv(s.nrows, rows_per_block);
    }
    a.nseg = nseg;
    a.xf = xf;
    a.xq = g->use_q8 ? xq : nullptr;
    a.xd = xd;
    a.amax = amax;
    a.nw = nw;
    a.eps = g->c.rms_eps;
    /* weights that fit L2 many times over; not the output head (too big to gain) */
    size_t wbytes = 0;
    for (int i = 0; i < nseg; i++) wbytes += (size_t)a.s[i].nrows * a.s[i].rb;
    a.pf = g->pdl_now && wbytes <= ((size_t)16 << 20);
    if (g->old_mmv) {
        if (nw) { seterr(err, errlen, "internal: the direct matvec does not normalize"); return -1; }
        CK(launch_k(g, k_mmv<2>, blocks, NTHR, 0, a));
        return 0;
    }
    int cap = 16, blocks2 = 0, tt = spec_type(a.s[0].type, a.xq != nullptr);
    for (int i = 0; i < nseg; i++) {
        if (!type_is_float_d(a.s[i].type)) cap = std::max(cap, stage_cap(a.s[i].rb));
        if (a.s[i].type != a.s[0].type) tt = SPEC_NONE;
        a.s[i].blk0 = blocks2;
        blocks2 += cdiv(a.s[i].nrows, MV2_WARPS * MV2_R);
    }
    CK(launch_k(g, mmv2_kernel(tt), blocks2, MV2_WARPS * WARP, mmv2_smem(a.s[0].ncols, cap, nw != nullptr), a, cap, a.s[0].ncols));
    return 0;
}

/* nw: xf is the residual, RMS-normalized with nw inside gate+up (staged kernels only) */
static int launch_experts(GpuModel *g, const DLayer &L, const float *xf, const int8_t *xq, const float *xd, float *x, char *err, size_t errlen,
                          const float *nw = nullptr) {
    const Config &c = g->c;
    const int E = c.n_embd, F = L.F, K = c.n_expert_used;
    int8_t *hq = g->use_q8 ? g->hq : nullptr;
    if (g->old_mmv) {
        if (nw) { seterr(err, errlen, "internal: the direct expert kernels do not normalize"); return -1; }
        CK(launch_k(g, k_gateup, dim3(cdiv(F, 32), K), NTHR, 0, L.gate.p, L.gate.type, L.gate.rb, L.up.p, L.up.type, L.up.rb, E, F, g->sel, xf, xq,
                    xd, g->h, hq, g->hd, g->Fpad));
        CK(launch_k(g, k_down, cdiv(E, 8), NTHR, 0, L.down.p, L.down.type, L.down.rb, F, E, g->sel, g->selw, K, g->h, hq, g->hd, g->Fpad, x));
        return 0;
    }
    const int capg = std::min(3 * 512, std::max(stage_cap(L.gate.rb), stage_cap(L.up.rb)));
    const int ttg = L.gate.type == L.up.type && L.gate.rb == L.up.rb ? spec_type(L.gate.type, xq != nullptr) : SPEC_NONE;
    CK(launch_k(g, gateup2_kernel(ttg), dim3(cdiv(F, 32), K), NTHR, gateup2_smem(E, capg, nw != nullptr), L.gate.p, L.gate.type, L.gate.rb, L.up.p, L.up.type,
                L.up.rb, E, F, g->sel, xf, xq, xd, g->h, hq, g->hd, g->Fpad, capg, nw, c.rms_eps));
    const int capd = std::min(2 * 512, stage_cap(L.down.rb));
    CK(launch_k(g, down2_kernel(spec_type(L.down.type, hq != nullptr)), cdiv(E, 8), NTHR, down2_smem(F, 8, capd), L.down.p, L.down.type, L.down.rb, F, E, g->sel, g->selw, K, g->h, hq, g->hd, g->Fpad,
                x, capd));
    return 0;
}

static int launch_attn(GpuModel *g, const float *qkv, int stride, const __half *kc, const __half *vc, const int *pos_dev, int ch, int nch, int ntok,
                       float *part, char *err, size_t errlen) {
    const Config &c = g->c;
    const int D = c.head_dim, G = c.n_head / c.n_head_kv, nhg = (G + ATT_HB - 1) / ATT_HB;
    /* att_chunk keeps every query within 64 chunks: blocks past that would only exit */
    const dim3 grid(c.n_head_kv * nhg, std::min(nch, 64), ntok);
    const size_t smem = (size_t)(8 * ATT_HB + 4 * ATT_HB * D) * sizeof(float);
    const float scale = 1.0f / sqrtf((float)D);
#define ATT_CASE(n)                                                                                                                  \
    case n:                                                                                                                          \
        CK(launch_k(g, k_attn<n>, grid, 128, smem, qkv, stride, c.n_head, c.n_head_kv, D, kc, vc, g->kvdim, pos_dev, ch, nch, scale, part)); \
        break;
    switch (D / 32) {
        ATT_CASE(1) ATT_CASE(2) ATT_CASE(3) ATT_CASE(4) ATT_CASE(5) ATT_CASE(6) ATT_CASE(7) ATT_CASE(8)
    default: seterr(err, errlen, "head_dim %d unsupported", D); return -1;
    }
#undef ATT_CASE
    CKL();
    return 0;
}

/* One decode step for the token/position in g->d_io; argmax into d_amax. */
static int enqueue_decode(GpuModel *g, int am, char *err, size_t errlen) {
    const Config &c = g->c;
    const int E = c.n_embd, D = c.head_dim, K = c.n_expert_used, nh = c.n_head, nkv = c.n_head_kv;
    const int qkvw = g->qdim + 2 * g->kvdim;
    cudaStream_t st = g->st;
    int8_t *xq = g->use_q8 ? g->xq : nullptr;
    k_embed<<<dim3(cdiv(E, 8 * 256), 1), 256, 0, st>>>(g->emb.p, g->emb.type, E, g->emb.rb, g->d_io, g->x, g->d_amax);
    CKL();
    g->pdl_now = g->pdl;
    /* the staged kernels normalize x themselves (norm_x); the direct ones need k_rmsnorm */
    const bool fold = !g->old_mmv;
    const float *xin = fold ? g->x : g->xn;
    if (g->persist) {
        if (launch_persist(g, am, err, errlen)) return -1;
    }
    for (int l = 0; l < c.n_layer && !g->persist; l++) {
        const DLayer &L = g->L[l];
        const size_t koff = (size_t)l * g->n_ctx * g->kvdim;
        if (!fold) CK(launch_k(g, k_rmsnorm, 1, NTHR, E * sizeof(float), g->x, L.attn_norm, E, c.rms_eps, g->xn, nullptr, xq, g->xd));
        {
            const DT *w[3] = {&L.q, &L.k, &L.v};
            float *y[3] = {g->qkv, g->qkv + g->qdim, g->qkv + g->qdim + g->kvdim};
            if (launch_mmv(g, w, y, nullptr, 3, xin, g->xq, g->xd, nullptr, err, errlen, fold ? L.attn_norm : nullptr)) return -1;
        }
        CK(launch_k(g, k_qk_rope, dim3(nh + 2 * nkv, 1), (D / 2 + 31) / 32 * 32, 0, g->qkv, qkvw, nh, nkv, D, L.q_norm, L.k_norm, c.rms_eps,
                    g->d_io + 1, g->theta_scale, g->kc + koff, g->vc + koff, g->kvdim));
        if (launch_attn(g, g->qkv, qkvw, g->kc + koff, g->vc + koff, g->d_io + 1, ATT_CH, g->nch, 1, g->part, err, errlen)) return -1;
        CK(launch_k(g, k_attn_combine, dim3(nh, 1), D, 0, g->part, nh, D, ATT_CH, g->nch, g->d_io + 1, g->att, nullptr, xq, g->xd));
        {
            const DT *w[1] = {&L.o};
            float *y[1] = {g->x};
            const int acc[1] = {1};
            if (launch_mmv(g, w, y, acc, 1, g->att, g->xq, g->xd, nullptr, err, errlen)) return -1;
        }
        if (!fold) CK(launch_k(g, k_rmsnorm, 1, NTHR, E * sizeof(float), g->x, L.ffn_norm, E, c.rms_eps, g->xn, nullptr, xq, g->xd));
        CK(launch_k(g, k_router, cdiv(c.n_expert, RT_WARPS), RT_WARPS * WARP, router_smem(c.n_expert, E, fold), L.router, xin, E, c.n_expert, K,
                    g->rlog, g->rdone, g->sel, g->selw, g->rec + (size_t)l * K, g->recp + (size_t)l * K, (const int *)(g->d_force + (size_t)l * K),
                    (const int *)g->d_force_on, g->pdl_now, fold ? L.ffn_norm : nullptr, c.rms_eps));
        if (launch_experts(g, L, xin, xq, g->xd, g->x, err, errlen, fold ? L.ffn_norm : nullptr)) return -1;
    }
    if (g->persist && g->pk_head) return 0;   /* k_persist ran the head too */
    CK(launch_k(g, k_rmsnorm, 1, NTHR, E * sizeof(float), g->x, g->out_norm, E, c.rms_eps, g->xn, nullptr, xq, g->xd));
    {
        const DT *w[1] = {&g->out};
        float *y[1] = {g->logits};
        if (launch_mmv(g, w, y, nullptr, 1, g->xn, g->xq, g->xd, g->d_amax, err, errlen)) return -1;
    }
    return 0;
}

/* am: k_persist's attention mode (AM_CHUNKED for the kernel graph), a graph each */
static int build_graph(GpuModel *g, int am, char *err, size_t errlen) {
    if (g->graph[am]) return 0;
    cudaGraph_t graph = nullptr;
    CK(cudaStreamBeginCapture(g->st, cudaStreamCaptureModeThreadLocal));
    k_feed<<<1, 1, 0, g->st>>>(g->h_io, g->d_io, g->d_amax);
    g->pdl_now = 0;   /* k_embed (the first kernel, after k_feed) is launched plainly */
    int rc = enqueue_decode(g, am, err, errlen);
    g->pdl_now = 0;
    k_publish<<<1, 1, 0, g->st>>>(g->d_amax, g->h_amax, g->d_io);
    cudaError_t e = cudaStreamEndCapture(g->st, &graph);
    if (rc) { if (graph) cudaGraphDestroy(graph); return -1; }
    if (e != cudaSuccess) { seterr(err, errlen, "graph capture failed: %s", cudaGetErrorString(e)); return -1; }
    e = cudaGraphInstantiate(&g->graph[am], graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) { g->graph[am] = nullptr; seterr(err, errlen, "graph instantiation failed: %s", cudaGetErrorString(e)); return -1; }
    return 0;
}

/* Replays the decode graph for one token (asynchronous; the caller syncs, or waits on
 * ev_step of the step's slot). token < 0: the argmax of the step before, at its position
 * + 1 (k_feed). A slot's command is rewritten only once the step two before, which read
 * it, has run: the callers keep at most two steps in flight. */
static int run_decode(GpuModel *g, int token, int pos, char *err, size_t errlen) {
    const int am = g->persist && pos < g->pk_chunked ? AM_ONE : AM_CHUNKED;
    if (build_graph(g, am, err, errlen)) return -1;
    const int slot = (int)(g->steps & 1);
    g->h_io[2 * slot] = token;
    g->h_io[2 * slot + 1] = pos;
    __sync_synchronize();   /* the command is in memory before the launch that reads it */
    CK(cudaGraphLaunch(g->graph[am], g->st));
    CK(cudaEventRecord(g->ev_step[slot], g->st));
    g->steps++;
    return 0;
}

static int gemm16(GpuModel *g, int m, int n, int k, const __half *A, int lda, const __half *B, int ldb, float *C, int ldc, float beta, char *err,
                  size_t errlen) {
    const float alpha = 1.f;
    CKB(cublasGemmEx(g->cb, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, A, CUDA_R_16F, lda, B, CUDA_R_16F, ldb, &beta, C, CUDA_R_32F, ldc,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* Launches the flat dequantizer for quant types; returns false (launching nothing)
 * where it does not apply: float types, padded rows (ld != ncols), rows that are not
 * whole blocks, an output not 16-byte aligned, or more than 2^31 elements. */
static bool dequant_flat(const uint8_t *w, int type, long ncols, long nr, __half *out, long ld, cudaStream_t st, long seg = 0, long ostride = 0) {
    const long n = ncols * nr;
    if (ld != ncols || ncols % 32 || ((uintptr_t)out & 15) || n <= 0 || n >= (1l << 31) || seg % 8 || ostride % 8) return false;
    const unsigned grid = (unsigned)((n + DQF_TILE - 1) / DQF_TILE);
#define DQF_CASE(T) \
    case T: if (ncols % QT<T>::BLK) return false; k_dequant_flat<T><<<grid, DQF_THREADS, 0, st>>>(w, (unsigned)n, out, (unsigned)seg, (size_t)ostride); return true;
    switch (type) {
    QUANT_TYPES(DQF_CASE)
    default: return false;
    }
#undef DQF_CASE
}

/* C_i = A_i^T B_i for the expert GEMMs of one group in one launch (pointer arrays on the device) */
static int gemm16_batched(GpuModel *g, int m, int n, int k, const void *const *A, int lda, const void *const *B, int ldb, void *const *C, int ldc,
                          int batch, char *err, size_t errlen) {
    const float alpha = 1.f, beta = 0.f;
    CKB(cublasGemmBatchedEx(g->cb, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, A, CUDA_R_16F, lda, B, CUDA_R_16F, ldb, &beta, C, CUDA_R_32F, ldc,
                            batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* rows r0..r0+nr of d to f16 at out (row stride ld); seg rows > 0: every seg rows start a new
 * segment ostride elements after the last one's start */
static int dequant(GpuModel *g, const DT &d, long r0, long nr, __half *out, long ld, char *err, size_t errlen, long seg = 0, long ostride = 0) {
    const long per_row = (d.ncols + 7) / 8, total = per_row * nr;
    if (total <= 0) return 0;
    if (!g->dq_generic && dequant_flat(d.p + (size_t)r0 * d.rb, d.type, d.ncols, nr, out, ld, g->dq_st, seg * d.ncols, ostride)) { CKL(); return 0; }
    if (seg) {
        for (long k = 0; k * seg < nr; k++)
            if (dequant(g, d, r0 + k * seg, std::min(seg, nr - k * seg), out + k * ostride, ld, err, errlen)) return -1;
        return 0;
    }
    k_dequant_f16<<<(unsigned)((total + 255) / 256), 256, 0, g->dq_st>>>(d.p + (size_t)r0 * d.rb, d.type, d.ncols, d.rb, (int)nr, out, ld);
    CKL();
    return 0;
}

/* One k_expert_gemm launch over *nitems (at most max_items) work items: C[slot][r] = W_e[r] . X[slot] for the
 * M rows of each expert's slice of w0 (and of w1 into columns col1.., as grid z = 1, when
 * given). False when the weight's type or width is not one it serves. */
static bool expert_gemm(const DT &w0, const DT *w1, int M, const int4 *items, const int *nitems, int max_items, const __half *X, int ldx, float *C,
                        int ldc, int col1, cudaStream_t st) {
    if (!expert_gemm_serves(w0) || (w1 && w1->type != w0.type) || max_items <= 0) return false;
    const dim3 grid(cdiv(M, MG_BM), max_items, w1 ? 2 : 1);
    const size_t es = (size_t)M * w0.rb;
#define MG_CASE(T)                                                                                                                 \
    case T:                                                                                                                        \
        k_expert_gemm<T><<<grid, MG_THREADS, MG_SMEM, st>>>(w0.p, w1 ? w1->p : w0.p, es, w0.rb, M, w0.ncols, items, nitems, X, ldx, C, ldc, col1); \
        return true;
    switch (w0.type) {
    QUANT_TYPES(MG_CASE)
    default: return false;
    }
#undef MG_CASE
}

/* QWEN3MOE_PREFILL_PROF: events around prefill's parts, summed and printed per chunk
 * (the events serialize nothing; the chunk synchronizes anyway). */
enum { PR_DEQ_ATTN, PR_GEMM_ATTN, PR_ATTN, PR_ROUTE, PR_DEQ_EXP, PR_GEMM_EXP, PR_OUT, PR_N };
static void prof_mark(GpuModel *g, int cat, bool begin) {
    if (!g->prof) return;
    cudaEvent_t e;
    cudaEventCreate(&e);
    cudaEventRecord(e, g->st);
    if (begin) g->prof_ev.push_back({cat, {e, nullptr}});
    else g->prof_ev.back().second.second = e;
}
static void prof_report(GpuModel *g, int n, double active) {
    if (!g->prof) return;
    cudaStreamSynchronize(g->st);
    static const char *names[PR_N] = {"attn dequant", "attn gemm", "attention", "router+sync", "expert dequant", "expert gemm+swiglu", "output"};
    double t[PR_N] = {0}, all = 0;
    for (auto &p : g->prof_ev) {
        float ms = 0;
        if (p.second.second) cudaEventElapsedTime(&ms, p.second.first, p.second.second);
        t[p.first] += ms;
        all += ms;
        cudaEventDestroy(p.second.first);
        if (p.second.second) cudaEventDestroy(p.second.second);
    }
    g->prof_ev.clear();
    fprintf(stderr, "prefill %d tokens, %.1f experts with tokens per layer:", n, active);
    for (int i = 0; i < PR_N; i++) fprintf(stderr, " %s %.2f ms;", names[i], t[i]);
    fprintf(stderr, " sum %.2f ms; %ld expert GEMM launches, %.0f slot rows per layer\n", all, g->prof_calls, (double)g->prof_rows / g->c.n_layer);
    g->prof_calls = g->prof_rows = 0;
}

/* Prefill attention of n tokens at pos.. against keys 0..pos+n-1 with cuBLAS (see
 * k_softmax_causal), into p16. Returns false (doing nothing) where it does not apply:
 * QWEN3MOE_ATTN=split, or scores of even one head too large for the weight scratch (free
 * between the QKV and output projections). *rc = -1 on a CUDA/cuBLAS error. */
static bool gemm_attention(GpuModel *g, size_t koff, int n, int pos, char *err, size_t errlen, int *rc) {
    const Config &c = g->c;
    const int D = c.head_dim, nh = c.n_head, nkv = c.n_head_kv, G = nh / nkv, qdim = g->qdim, kvdim = g->kvdim, qkvw = qdim + 2 * kvdim;
    const int npos = pos + n;
    const size_t hs = ((size_t)npos * n + 7) & ~(size_t)7;   /* elements per head of S and P */
    const size_t room = g->wscr_elems * sizeof(__half) / (hs * (sizeof(float) + sizeof(__half)));
    *rc = 0;
    if (g->attn_split || room < 1 || (size_t)n * qdim > (size_t)g->SP * c.n_embd) return false;
    const int hb = (int)std::min((size_t)G, room);
    float *S = (float *)g->wscr;
    __half *P = (__half *)(S + (size_t)hb * hs), *q16 = g->gx16;
    const float one = 1.f, zero = 0.f, scale = 1.0f / sqrtf((float)D);
    cudaStream_t st = g->st;
    *rc = -1;
    k_q16<<<dim3(cdiv(qdim, 256), n), 256, 0, st>>>(g->pqkv, qkvw, qdim, q16);
    CKL();
    for (int kvh = 0; kvh < nkv; kvh++)
        for (int h0 = kvh * G; h0 < (kvh + 1) * G; h0 += hb) {
            const int nb = std::min(hb, (kvh + 1) * G - h0);
            CKB(cublasGemmStridedBatchedEx(g->cb, CUBLAS_OP_T, CUBLAS_OP_N, npos, n, D, &one, g->kc + koff + kvh * D, CUDA_R_16F, kvdim, 0,
                                           q16 + (size_t)h0 * D, CUDA_R_16F, qdim, D, &zero, S, CUDA_R_32F, npos, (long long)hs, nb, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT));
            k_softmax_causal<<<dim3(n, nb), 256, 0, st>>>(S, P, npos, hs, pos, scale);
            CKL();
            CKB(cublasGemmStridedBatchedEx(g->cb, CUBLAS_OP_N, CUBLAS_OP_N, D, n, npos, &one, g->vc + koff + kvh * D, CUDA_R_16F, kvdim, 0, P, CUDA_R_16F,
                                           npos, (long long)hs, &zero, g->p16 + (size_t)h0 * D, CUDA_R_16F, qdim, D, nb, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT));
        }
    *rc = 0;
    return true;
}

/* The layer's experts on the host-routed path (QWEN3MOE_MOE=dequant, or weights that
 * k_expert_gemm does not serve): the chosen experts come back to the host, which lays out
 * the slot rows padded to count classes; the expert weights are dequantized to f16 on st2
 * into two alternating halves of the scratch while st runs cuBLAS on the other half. */
static int moe_host_routed(GpuModel *g, const DLayer &L, int l, int n, long *active, char *err, size_t errlen) {
    const Config &c = g->c;
    const int E = c.n_embd, K = c.n_expert_used, NE = c.n_expert, F = L.F;
    cudaStream_t st = g->st;
    CK(cudaMemcpyAsync(g->h_sel, g->psel, sizeof(int) * n * K, cudaMemcpyDeviceToHost, st));
    CK(cudaStreamSynchronize(st));
    std::vector<int> &cnt = g->cnt, &off = g->off;
    std::fill(cnt.begin(), cnt.end(), 0);
    for (int i = 0; i < n * K; i++) {
        const int e = g->h_sel[i];
        if (e < 0 || e >= NE) { seterr(err, errlen, "router produced expert id %d (layer %d)", e, l); return -1; }
        cnt[e]++;
    }
    off[0] = 0;
    for (int e = 0; e < NE; e++) off[e + 1] = off[e] + cnt[e];
    /* Slot rows: expert e's tokens take rows pbase[e] .. pbase[e]+cnt[e]-1. Batched: each
     * expert's rows are padded to its count class (multiples of 16 up to 64, then steps of
     * ~1.5x: few classes, so few launches; the padding rows are zeros), and the experts of one weight group and one class
     * form one cuBLAS batched call of n = class, instead of one small GEMM each (a 768 x ~32
     * output fills ~6 of 132 SMs). Padding stays under 1.5x + 16 rows per expert, inside the
     * SP = 2 * NB_MAX * K rows; where it would not fit, packed rows and one GEMM per expert. */
    std::vector<int> &pbase = g->pbase, &rank = g->rank;
    std::vector<GpuModel::GBatch> &gbt = g->gbt;
    const int ngr = cdiv(NE, g->EG);
    g->gb0.resize(ngr + 1);
    g->gp0.resize(ngr + 1);
    gbt.clear();
    int P = 0;   /* slot rows in use */
    {
        int q = 0;
        std::vector<std::pair<int, int>> ce;
        for (int gi = 0; gi < ngr; gi++) {
            g->gb0[gi] = (int)gbt.size();
            g->gp0[gi] = P;
            ce.clear();
            for (int e = gi * g->EG; e < std::min(NE, (gi + 1) * g->EG); e++) {
                if (!cnt[e]) continue;
                int k = 64;
                if (cnt[e] <= 64) k = (cnt[e] + 15) & ~15;
                else while (k < cnt[e]) k = (k * 3 / 2 + 7) & ~7;
                ce.push_back({k, e});
            }
            std::sort(ce.begin(), ce.end());
            for (size_t j = 0; j < ce.size(); j++) {
                if ((int)gbt.size() == g->gb0[gi] || gbt.back().n != ce[j].first) gbt.push_back({q, 0, ce[j].first});
                gbt.back().nb++;
                pbase[ce[j].second] = P;
                rank[ce[j].second] = q++;
                P += ce[j].first;
            }
        }
        g->gb0[ngr] = (int)gbt.size();
        g->gp0[ngr] = P;
    }
    const bool batched = !g->gemm_loop && P <= g->SP;
    if (!batched) {
        for (int e = 0; e < NE; e++) pbase[e] = off[e];
        P = n * K;
    }
    if (g->prof) g->prof_rows += P;
    for (int s2 = 0; s2 < P; s2++) g->h_perm[s2] = -1;
    std::vector<int> fill(pbase.begin(), pbase.end());
    for (int i = 0; i < n; i++)
        for (int k = 0; k < K; k++) {
            const int e = g->h_sel[i * K + k], s = fill[e]++;
            g->h_perm[s] = i;
            g->h_slot[i * K + k] = s;
        }
    CK(cudaMemcpyAsync(g->perm, g->h_perm, sizeof(int) * P, cudaMemcpyHostToDevice, st));
    CK(cudaMemcpyAsync(g->slot_of, g->h_slot, sizeof(int) * n * K, cudaMemcpyHostToDevice, st));
    k_gather16<<<P, 256, 0, st>>>(g->p16, E, g->perm, g->gx16);
    CKL();
    prof_mark(g, PR_ROUTE, false);
    for (int e = 0; e < NE; e++) *active += cnt[e] > 0;
    const size_t FE = (size_t)F * E;
    /* weight scratch: per expert slot gate rows then up rows ([2F][E], one GEMM of m = 2F
     * whose output rows are exactly gu's gate | up halves), then the down weights */
    auto half_of = [&](int gi) { return g->wscr + (size_t)(gi & 1) * 3 * g->EG * FE; };
    if (batched) {   /* pointer arrays of the whole layer, indexed by the expert's rank */
        const void **hp = g->h_gptr;
        for (int e = 0; e < NE; e++) {
            if (!cnt[e]) continue;
            const int r = rank[e];
            const size_t w = (size_t)(e % g->EG) * FE, pb = pbase[e];
            __half *sgu = half_of(e / g->EG), *sd = sgu + (size_t)2 * g->EG * FE;
            hp[0 * NE + r] = sgu + 2 * w; hp[1 * NE + r] = g->gx16 + pb * E; hp[2 * NE + r] = g->gu + pb * 2 * F;
            hp[6 * NE + r] = sd + w;      hp[7 * NE + r] = g->h16 + pb * F;  hp[8 * NE + r] = g->dout + pb * E;
        }
        CK(cudaMemcpyAsync(g->d_gptr, g->h_gptr, sizeof(void *) * 9 * NE, cudaMemcpyHostToDevice, st));
    }
    /* st2 starts after everything st has queued (attention scores and the o-projection's
     * weights live in the same scratch) */
    CK(cudaEventRecord(g->ev_start, st));
    CK(cudaStreamWaitEvent(g->st2, g->ev_start, 0));
    bool used[2] = {false, false};
    for (int e0 = 0; e0 < NE; e0 += g->EG) {
        const int e1 = std::min(NE, e0 + g->EG), hb = (e0 / g->EG) & 1;
        if (off[e1] == off[e0]) continue;
        __half *sgu = half_of(e0 / g->EG), *sd = sgu + (size_t)2 * g->EG * FE;
        /* this half is free once the GEMMs of the group before last are done */
        if (used[hb]) CK(cudaStreamWaitEvent(g->st2, g->ev_gemm[hb], 0));
        used[hb] = true;
        g->dq_st = g->st2;
        /* dequantize only the runs of experts that have tokens */
        prof_mark(g, PR_DEQ_EXP, true);
        for (int e = e0; e < e1; e++) {
            if (!cnt[e]) continue;
            int e2 = e;
            while (e2 + 1 < e1 && cnt[e2 + 1]) e2++;
            const long ne_ = e2 - e + 1;
            if (dequant(g, L.gate, (long)e * F, ne_ * F, sgu + (size_t)(e - e0) * 2 * FE, E, err, errlen, F, 2 * FE) ||
                dequant(g, L.up, (long)e * F, ne_ * F, sgu + (size_t)(e - e0) * 2 * FE + FE, E, err, errlen, F, 2 * FE) ||
                dequant(g, L.down, (long)e * E, ne_ * E, sd + (size_t)(e - e0) * FE, F, err, errlen))
                return -1;
            e = e2;
        }
        g->dq_st = st;
        CK(cudaEventRecord(g->ev_deq[hb], g->st2));
        CK(cudaStreamWaitEvent(st, g->ev_deq[hb], 0));
        prof_mark(g, PR_DEQ_EXP, false);
        prof_mark(g, PR_GEMM_EXP, true);
        if (batched) {
            const int gi = e0 / g->EG, b0 = g->gb0[gi], b1 = g->gb0[gi + 1], p0 = g->gp0[gi], p1 = g->gp0[gi + 1];
            const void *const *gp = g->d_gptr;
            for (int bi = b0; bi < b1; bi++) {
                const GpuModel::GBatch &B = gbt[bi];
                if (gemm16_batched(g, 2 * F, B.n, E, gp + 0 * NE + B.q0, E, gp + 1 * NE + B.q0, E, (void *const *)(gp + 2 * NE + B.q0), 2 * F, B.nb,
                                   err, errlen))
                    return -1;
            }
            const long nel = (long)(p1 - p0) * F;
            k_swiglu16<<<(unsigned)((nel + 255) / 256), 256, 0, st>>>(g->gu + (size_t)p0 * 2 * F, F, nel, g->h16 + (size_t)p0 * F);
            CKL();
            for (int bi = b0; bi < b1; bi++) {
                const GpuModel::GBatch &B = gbt[bi];
                if (gemm16_batched(g, E, B.n, F, gp + 6 * NE + B.q0, F, gp + 7 * NE + B.q0, F, (void *const *)(gp + 8 * NE + B.q0), E, B.nb, err, errlen))
                    return -1;
            }
            if (g->prof) g->prof_calls += 2 * (b1 - b0);
            CK(cudaEventRecord(g->ev_gemm[hb], st));
            prof_mark(g, PR_GEMM_EXP, false);
            continue;
        }
        for (int e = e0; e < e1; e++) {
            if (!cnt[e]) continue;
            if (g->prof) g->prof_calls += 2;
            if (gemm16(g, 2 * F, cnt[e], E, sgu + (size_t)(e - e0) * 2 * FE, E, g->gx16 + (size_t)off[e] * E, E, g->gu + (size_t)off[e] * 2 * F,
                       2 * F, 0.f, err, errlen))
                return -1;
        }
        const long nel = (long)(off[e1] - off[e0]) * F;
        k_swiglu16<<<(unsigned)((nel + 255) / 256), 256, 0, st>>>(g->gu + (size_t)off[e0] * 2 * F, F, nel, g->h16 + (size_t)off[e0] * F);
        CKL();
        for (int e = e0; e < e1; e++) {
            if (!cnt[e]) continue;
            if (gemm16(g, E, cnt[e], F, sd + (size_t)(e - e0) * FE, F, g->h16 + (size_t)off[e] * F, F, g->dout + (size_t)off[e] * E, E, 0.f, err,
                       errlen))
                return -1;
        }
        CK(cudaEventRecord(g->ev_gemm[hb], st));
        prof_mark(g, PR_GEMM_EXP, false);
    }
    return 0;
}

/* The layer's experts with the routing on the device (k_route, no host round trip) and
 * k_expert_gemm on the quantized weights: gate|up, SwiGLU, down. */
static int moe_device_routed(GpuModel *g, const DLayer &L, int l, int n, char *err, size_t errlen) {
    const Config &c = g->c;
    const int E = c.n_embd, K = c.n_expert_used, NE = c.n_expert, F = L.F, nsel = n * K, max_items = NE + nsel / MG_BN;
    cudaStream_t st = g->st;
    k_route<<<1, RTE_WARPS * WARP, route_smem(NE), st>>>(g->psel, nsel, K, NE, g->perm, g->slot_of, g->d_items, g->d_nitems,
                                                         g->prof ? g->d_cnt + (size_t)l * NE : nullptr, g->d_bad);
    CKL();
    k_gather16<<<nsel, 256, 0, st>>>(g->p16, E, g->perm, g->gx16);
    CKL();
    prof_mark(g, PR_ROUTE, false);
    if (g->prof) {
        g->prof_rows += nsel;
        g->prof_calls += 2;
    }
    prof_mark(g, PR_GEMM_EXP, true);
    const long nel = (long)nsel * F;
    if (!expert_gemm(L.gate, &L.up, F, g->d_items, g->d_nitems, max_items, g->gx16, E, g->gu, 2 * F, F, st)) {
        seterr(err, errlen, "expert GEMM refused a %s weight", gguf_type_get(L.gate.type)->name);
        return -1;
    }
    CKL();
    k_swiglu16<<<(unsigned)((nel + 255) / 256), 256, 0, st>>>(g->gu, F, nel, g->h16);
    CKL();
    if (!expert_gemm(L.down, nullptr, E, g->d_items, g->d_nitems, max_items, g->h16, F, g->dout, E, 0, st)) {
        seterr(err, errlen, "expert GEMM refused a %s weight", gguf_type_get(L.down.type)->name);
        return -1;
    }
    CKL();
    prof_mark(g, PR_GEMM_EXP, false);
    return 0;
}

/* Prefill of n <= NB_MAX tokens at pos..pos+n-1. */
static int prefill_chunk(GpuModel *g, const int *tokens, int n, int pos, float *logits_all, float *logits_last, int *experts, float *expert_p,
                         char *err, size_t errlen) {
    const Config &c = g->c;
    const int E = c.n_embd, D = c.head_dim, K = c.n_expert_used, nh = c.n_head, nkv = c.n_head_kv, NE = c.n_expert, V = c.n_vocab;
    const int qkvw = g->qdim + 2 * g->kvdim;
    cudaStream_t st = g->st;
    CK(cudaMemcpyAsync(g->ptok, tokens, n * sizeof(int), cudaMemcpyHostToDevice, st));
    CK(cudaMemcpyAsync(g->d_pos, &pos, sizeof(int), cudaMemcpyHostToDevice, st));
    CK(cudaMemsetAsync(g->d_bad, 0, sizeof(int), st));
    CK(cudaStreamSynchronize(st));
    long active = 0;   /* experts with tokens, summed over layers (QWEN3MOE_PREFILL_PROF) */
    g->dq_st = st;   /* (an error return may have left it on st2) */
    int rc = 0;
    k_embed<<<dim3(cdiv(E, 8 * 256), n), 256, 0, st>>>(g->emb.p, g->emb.type, E, g->emb.rb, g->ptok, g->px, nullptr);
    CKL();
    for (int l = 0; l < c.n_layer; l++) {
        const DLayer &L = g->L[l];
        const size_t koff = (size_t)l * g->n_ctx * g->kvdim;
        k_rmsnorm<<<n, NTHR, E * sizeof(float), st>>>(g->px, L.attn_norm, E, c.rms_eps, nullptr, g->p16, nullptr, nullptr);
        CKL();
        prof_mark(g, PR_DEQ_ATTN, true);
        if (dequant(g, L.q, 0, L.q.nrows, g->wscr, E, err, errlen) ||
            dequant(g, L.k, 0, L.k.nrows, g->wscr + (size_t)g->qdim * E, E, err, errlen) ||
            dequant(g, L.v, 0, L.v.nrows, g->wscr + (size_t)(g->qdim + g->kvdim) * E, E, err, errlen))
            return -1;
        prof_mark(g, PR_DEQ_ATTN, false);
        prof_mark(g, PR_GEMM_ATTN, true);
        if (gemm16(g, qkvw, n, E, g->wscr, E, g->p16, E, g->pqkv, qkvw, 0.f, err, errlen)) return -1;
        prof_mark(g, PR_GEMM_ATTN, false);
        prof_mark(g, PR_ATTN, true);
        k_qk_rope<<<dim3(nh + 2 * nkv, n), (D / 2 + 31) / 32 * 32, 0, st>>>(g->pqkv, qkvw, nh, nkv, D, L.q_norm, L.k_norm, c.rms_eps, g->d_pos,
                                                                            g->theta_scale, g->kc + koff, g->vc + koff, g->kvdim);
        CKL();
        if (gemm_attention(g, koff, n, pos, err, errlen, &rc)) {
            if (rc) return -1;
        } else {   /* QWEN3MOE_ATTN=split, or scores too large for the scratch */
            if (launch_attn(g, g->pqkv, qkvw, g->kc + koff, g->vc + koff, g->d_pos, g->ch_p, g->nch_p, n, g->ppart, err, errlen)) return -1;
            k_attn_combine<<<dim3(nh, n), D, 0, st>>>(g->ppart, nh, D, g->ch_p, g->nch_p, g->d_pos, nullptr, g->p16, nullptr, nullptr);
            CKL();
        }
        prof_mark(g, PR_ATTN, false);
        prof_mark(g, PR_DEQ_ATTN, true);
        if (dequant(g, L.o, 0, L.o.nrows, g->wscr, g->qdim, err, errlen)) return -1;
        prof_mark(g, PR_DEQ_ATTN, false);
        prof_mark(g, PR_GEMM_ATTN, true);
        if (gemm16(g, E, n, g->qdim, g->wscr, g->qdim, g->p16, g->qdim, g->px, E, 1.f, err, errlen)) return -1;
        prof_mark(g, PR_GEMM_ATTN, false);
        prof_mark(g, PR_ROUTE, true);
        k_rmsnorm<<<n, NTHR, E * sizeof(float), st>>>(g->px, L.ffn_norm, E, c.rms_eps, g->pxn, g->p16, nullptr, nullptr);
        CKL();
        {
            const float one = 1.f, zero = 0.f;
            CKB(cublasSgemm(g->cb, CUBLAS_OP_T, CUBLAS_OP_N, NE, n, E, &one, L.router, E, g->pxn, E, &zero, g->prlog, NE));
        }
        k_topk<<<n, WARP, NE * sizeof(float), st>>>(g->prlog, NE, K, g->psel, g->pselw, g->prec + (size_t)l * n * K, g->precp + (size_t)l * n * K,
                                                    g->d_force + (size_t)l * K, c.n_layer * K, g->d_force_on);
        CKL();
        if (experts_fused(g, L) ? moe_device_routed(g, L, l, n, err, errlen) : moe_host_routed(g, L, l, n, &active, err, errlen)) return -1;
        k_moe_combine<<<n, 256, 0, st>>>(g->dout, E, g->slot_of, g->pselw, K, g->px);
        CKL();
    }
    prof_mark(g, PR_OUT, true);
    if (logits_all) {
        if (g->logits_all_rows < (size_t)n) {
            cudaFree(g->logits_all);
            g->logits_all = nullptr;
            CK(cudaMalloc(&g->logits_all, (size_t)n * V * sizeof(float)));
            g->logits_all_rows = n;
        }
        k_rmsnorm<<<n, NTHR, E * sizeof(float), st>>>(g->px, g->out_norm, E, c.rms_eps, nullptr, g->p16, nullptr, nullptr);
        CKL();
        for (long r0 = 0; r0 < V; r0 += g->OT) {
            const int nr = (int)std::min((long)g->OT, V - r0);
            if (dequant(g, g->out, r0, nr, g->wscr, E, err, errlen)) return -1;
            if (gemm16(g, nr, n, E, g->wscr, E, g->p16, E, g->logits_all + r0, V, 0.f, err, errlen)) return -1;
        }
        CK(cudaMemcpyAsync(logits_all, g->logits_all, (size_t)n * V * sizeof(float), cudaMemcpyDeviceToHost, st));
    } else if (logits_last) {
        int8_t *xq = g->use_q8 ? g->xq : nullptr;
        k_rmsnorm<<<1, NTHR, E * sizeof(float), st>>>(g->px + (size_t)(n - 1) * E, g->out_norm, E, c.rms_eps, g->xn, nullptr, xq, g->xd);
        CKL();
        const DT *w[1] = {&g->out};
        float *y[1] = {g->logits};
        if (launch_mmv(g, w, y, nullptr, 1, g->xn, g->xq, g->xd, nullptr, err, errlen)) return -1;
        CK(cudaMemcpyAsync(logits_last, g->logits, (size_t)V * sizeof(float), cudaMemcpyDeviceToHost, st));
    }
    prof_mark(g, PR_OUT, false);
    const size_t nrec = (size_t)c.n_layer * n * K;   /* the routers' own choices, [layer][token][k] */
    if (experts) CK(cudaMemcpyAsync(g->h_rec, g->prec, sizeof(int) * nrec, cudaMemcpyDeviceToHost, st));
    if (expert_p) CK(cudaMemcpyAsync(g->h_recp, g->precp, sizeof(float) * nrec, cudaMemcpyDeviceToHost, st));
    if (g->prof) {   /* experts with tokens in the device-routed layers */
        std::vector<int> cnt((size_t)NE * c.n_layer);
        CK(cudaMemcpy(cnt.data(), g->d_cnt, sizeof(int) * cnt.size(), cudaMemcpyDeviceToHost));
        for (int l = 0; l < c.n_layer; l++)
            if (experts_fused(g, g->L[l]))
                for (int e = 0; e < NE; e++) active += cnt[(size_t)l * NE + e] > 0;
    }
    prof_report(g, n, (double)active / c.n_layer);
    CK(cudaStreamSynchronize(st));
    int bad = 0;
    CK(cudaMemcpy(&bad, g->d_bad, sizeof bad, cudaMemcpyDeviceToHost));
    if (bad) { seterr(err, errlen, "the router produced an expert id outside [0, %d)", NE); return -1; }
    for (int l = 0; l < c.n_layer; l++)
        for (int i = 0; i < n; i++)
            for (int k = 0; k < K; k++) {
                const size_t from = ((size_t)l * n + i) * K + k, to = ((size_t)i * c.n_layer + l) * K + k;
                if (experts) experts[to] = g->h_rec[from];
                if (expert_p) expert_p[to] = g->h_recp[from];
            }
    return 0;
}

/* Greedy steps queued and not read (a generation that stopped early, gpu_decode_queue):
 * wait for them, drop them. */
static int settle(GpuModel *g, char *err, size_t errlen) {
    if (!g->unread) return 0;
    CK(cudaStreamSynchronize(g->st));
    g->unread = 0;
    return 0;
}
extern "C" int gpu_eval(GpuModel *g, const int *tokens, int n, int pos, float *logits, int all_logits, int *experts, float *expert_p, char *err,
                        size_t errlen) {
    const Config &c = g->c;
    const int V = c.n_vocab, NL = c.n_layer, K = c.n_expert_used;
    if (n < 1 || pos < 0 || pos + n > g->n_ctx) {
        seterr(err, errlen, "cannot evaluate %d tokens at position %d with a context of %d", n, pos, g->n_ctx);
        return -1;
    }
    if (settle(g, err, errlen)) return -1;   /* queued greedy steps of a generation that stopped: their argmax is not wanted */
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V) { seterr(err, errlen, "token id %d out of range [0, %d)", tokens[i], V); return -1; }
    if (g->h_force && g->force_n != n) {
        seterr(err, errlen, "forced experts were given for %d tokens, but %d are evaluated", g->force_n, n);
        return -1;
    }
    const int want = g->h_force != nullptr;
    if (want != g->force_state) {
        g->force_state = want;
        CK(cudaMemcpyAsync(g->d_force_on, &g->force_state, sizeof(int), cudaMemcpyHostToDevice, g->st));
    }
    const size_t fper = (size_t)NL * K;   /* forced ids per token */
    const char *pf = getenv("QWEN3MOE_PREFILL_MIN");
    const int prefill_min = pf ? atoi(pf) : 3;
    if (n < prefill_min) {
        for (int i = 0; i < n; i++) {
            if (want) CK(cudaMemcpyAsync(g->d_force, g->h_force + i * fper, sizeof(int) * fper, cudaMemcpyHostToDevice, g->st));
            if (run_decode(g, tokens[i], pos + i, err, errlen)) return -1;
            if (logits && (all_logits || i == n - 1))
                CK(cudaMemcpyAsync(logits + (all_logits ? (size_t)i * V : 0), g->logits, (size_t)V * sizeof(float), cudaMemcpyDeviceToHost, g->st));
            if (experts) CK(cudaMemcpyAsync(experts + (size_t)i * NL * K, g->rec, sizeof(int) * NL * K, cudaMemcpyDeviceToHost, g->st));
            if (expert_p) CK(cudaMemcpyAsync(expert_p + (size_t)i * NL * K, g->recp, sizeof(float) * NL * K, cudaMemcpyDeviceToHost, g->st));
            CK(cudaStreamSynchronize(g->st));
        }
        return 0;
    }
    for (int s = 0; s < n; s += NB_MAX) {
        const int nn = std::min(NB_MAX, n - s);
        float *la = logits && all_logits ? logits + (size_t)s * V : nullptr;
        float *ll = logits && !all_logits && s + nn == n ? logits : nullptr;
        if (want) CK(cudaMemcpyAsync(g->d_force, g->h_force + s * fper, sizeof(int) * fper * nn, cudaMemcpyHostToDevice, g->st));
        if (prefill_chunk(g, tokens + s, nn, pos + s, la, ll, experts ? experts + (size_t)s * NL * K : nullptr,
                          expert_p ? expert_p + (size_t)s * NL * K : nullptr, err, errlen))
            return -1;
    }
    return 0;
}

extern "C" int gpu_force_experts(GpuModel *g, const int *ids, int n, char *err, size_t errlen) {
    const Config &c = g->c;
    if (ids) {
        for (long i = 0; i < (long)n * c.n_layer * c.n_expert_used; i++)
            if (ids[i] < 0 || ids[i] >= c.n_expert) { seterr(err, errlen, "forced expert id %d out of range [0, %d)", ids[i], c.n_expert); return -1; }
    }
    g->h_force = ids;
    g->force_n = ids ? n : 0;
    return 0;
}

/* Greedy decode steps, queued: the host reads step t's token while step t + 1, fed on the
 * device from step t's argmax, already runs (the GPU does not wait for the host between
 * tokens). Up to two steps unread. */
extern "C" int gpu_decode_queue(GpuModel *g, int token, int pos, char *err, size_t errlen) {
    if (g->unread >= 2) { seterr(err, errlen, "two decode steps are queued already"); return -1; }
    if (token < 0) {
        if (!g->unread) { seterr(err, errlen, "a fed decode step needs a queued step before it"); return -1; }
        pos = g->qpos + 1;
    } else if (token >= g->c.n_vocab) {
        seterr(err, errlen, "token id %d out of range", token);
        return -1;
    }
    if (pos < 0 || pos >= g->n_ctx) { seterr(err, errlen, "position %d outside the context of %d", pos, g->n_ctx); return -1; }
    if (run_decode(g, token, pos, err, errlen)) return -1;
    g->unread++;
    g->qpos = pos;
    return 0;
}
extern "C" int gpu_decode_next(GpuModel *g, int *next, char *err, size_t errlen) {
    if (!g->unread) { seterr(err, errlen, "no decode step is queued"); return -1; }
    const long i = g->steps - g->unread;
    CK(cudaEventSynchronize(g->ev_step[i & 1]));
    g->unread--;
    const unsigned long long k = ((volatile unsigned long long *)g->h_amax)[i & 1];
    if (k == 0ull) { seterr(err, errlen, "the logits are all NaN at position %d", g->qpos - g->unread); return -1; }
    *next = (int)(~(uint32_t)(k & 0xffffffffull));
    return 0;
}
extern "C" int gpu_decode_drop(GpuModel *g, char *err, size_t errlen) { return settle(g, err, errlen); }
