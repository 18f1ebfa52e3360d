/* tests/gpu/test_kernels.cu — every GPU kernel of qwen3moe_cuda.cu against a CPU
 * computation on fresh random inputs, for every supported quant type and odd sizes.
 * Outputs are poisoned (NaN) before each launch. Prints TAP-style lines and a
 * final "N passed, N failed"; exit code 1 on any failure. Needs a CUDA device. */
#define GGUF_IMPLEMENTATION
#include "../../gguf.h"
#include "../../qwen3moe_cuda.cu"
#include "../randquant.h"
#include <vector>

static int n_pass = 0, n_fail = 0;
static void report(bool ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf(ok ? "ok - " : "not ok - ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    (ok ? n_pass : n_fail)++;
}
#define CU(x)                                                                                     \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) { printf("not ok - CUDA %s: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); exit(1); } \
    } while (0)

static uint64_t rng = 0x1234567ull;
static float randn() {
    float s = 0;
    for (int i = 0; i < 4; i++) s += randquant_unit(&rng);
    return (s - 2.0f) * 1.7320508f;
}
template <class T> static T *dalloc(size_t n) { T *p; CU(cudaMalloc(&p, n * sizeof(T) + 256)); CU(cudaMemset(p, 0xFF, n * sizeof(T) + 256)); return p; }
template <class T> static T *dup(const std::vector<T> &v) { T *p = dalloc<T>(v.size()); CU(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice)); return p; }
template <class T> static std::vector<T> back(const T *p, size_t n) { std::vector<T> v(n); CU(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost)); return v; }
static void poison(void *p, size_t bytes) { CU(cudaMemset(p, 0xFF, bytes)); }

static const uint32_t TYPES[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                                 GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
                                 GGML_TYPE_Q6_K, GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS};
static const char *tname(uint32_t t) { return gguf_type_get(t)->name; }
static int blk(uint32_t t) { return gguf_type_get(t)->blck_size; }

/* random weight matrix of nrows x ncols in type t, plus its f32 dequantization */
struct HostW {
    std::vector<uint8_t> q;
    std::vector<float> f;
    size_t rb;
};
static HostW make_w(uint32_t t, int ncols, long nrows) {
    HostW w;
    w.rb = gguf_row_bytes(t, ncols);
    w.q.resize(w.rb * nrows + 16);
    randquant_fill(t, w.q.data(), (int64_t)ncols * nrows, &rng, 0.5f);
    w.f.resize((size_t)ncols * nrows);
    for (long r = 0; r < nrows; r++) gguf_dequant_row(t, w.q.data() + r * w.rb, w.f.data() + (size_t)r * ncols, ncols);
    return w;
}

static void test_dequant() {
    for (uint32_t t : TYPES) {
        const int b = blk(t);
        const int ncols = b == 256 ? 768 : b == 32 ? 32 * 7 : 37, nrows = 5;
        HostW w = make_w(t, ncols, nrows);
        uint8_t *dw = dup(w.q);
        __half *out = dalloc<__half>((size_t)nrows * ncols);
        const long total = (long)((ncols + 7) / 8) * nrows;
        k_dequant_f16<<<(unsigned)((total + 255) / 256), 256>>>(dw, (int)t, ncols, w.rb, nrows, out, ncols);
        CU(cudaGetLastError());
        std::vector<__half> h = back(out, (size_t)nrows * ncols);
        double worst = 0;
        bool ok = true;
        for (size_t i = 0; i < h.size(); i++) {
            const float g = __half2float(h[i]), r = w.f[i];
            const double e = fabs((double)g - r) / (fabs(r) + 1e-3);
            if (!(e <= 1e-3)) ok = false;
            if (e > worst || e != e) worst = e;
        }
        report(ok, "dequant f16 %s %dx%d (worst rel %.2g)", tname(t), nrows, ncols, worst);
        cudaFree(dw);
        cudaFree(out);
    }
}

/* The flat prefill dequantizer (dequant_flat): several tiles with a partial last one,
 * once from the start of the weight and once from row 1 (a start that is not 16-byte
 * aligned, so the staging's edge chunks are read byte by byte), against the CPU. */
static void test_dequant_flat() {
    for (uint32_t t : TYPES) {
        const int b = blk(t);
        if (type_is_float_d((int)t)) continue;
        const int ncols = b == 256 ? 768 : 32 * 7, nrows = b == 256 ? 13 : 37;
        HostW w = make_w(t, ncols, nrows);
        uint8_t *dw = dup(w.q);
        __half *out = dalloc<__half>((size_t)nrows * ncols);
        for (int r0 : {0, 1}) {
            CU(cudaMemset(out, 0xFF, (size_t)nrows * ncols * 2));
            const bool launched = dequant_flat(dw + (size_t)r0 * w.rb, (int)t, ncols, nrows - r0, out, ncols, 0);
            CU(cudaGetLastError());
            CU(cudaDeviceSynchronize());
            std::vector<__half> h = back(out, (size_t)(nrows - r0) * ncols);
            double worst = 0;
            bool ok = launched;
            for (size_t i = 0; i < h.size(); i++) {
                const float g = __half2float(h[i]), r = w.f[(size_t)r0 * ncols + i];
                const double e = fabs((double)g - r) / (fabs(r) + 1e-3);
                if (!(e <= 1e-3)) ok = false;
                if (e > worst || e != e) worst = e;
            }
            report(ok, "dequant flat f16 %s %dx%d from row %d%s (worst rel %.2g)", tname(t), nrows - r0, ncols, r0, launched ? "" : " NOT LAUNCHED", worst);
        }
        cudaFree(dw);
        cudaFree(out);
    }
}

/* The prefill expert GEMM on quantized weights (k_expert_gemm): 3 experts of M = 80 rows
 * (a partial second row tile), 512 columns (two steps), gate and up as grid z into one
 * [slot][2M] output; expert 0 has 40 slot rows (an item of 32 and one of 8), expert 1
 * none, expert 2 has 17 from an odd slot, and one slot row between belongs to nobody.
 * Against the CPU with the weights rounded to f16 as the kernel does; slots and columns no
 * item covers must keep their poison. */
static void test_expert_gemm() {
    const int NE = 3, M = 80, Kd = 512, P = 60;
    const int4 items_h[] = {make_int4(0, 0, 32, 0), make_int4(0, 32, 8, 0), make_int4(2, 41, 17, 0)};
    const int ni = 3;
    std::vector<int> owner(P, -1);
    for (int i = 0; i < ni; i++)
        for (int t = 0; t < items_h[i].z; t++) owner[items_h[i].y + t] = items_h[i].x;
    std::vector<__half> xh((size_t)P * Kd);
    for (auto &v : xh) v = __float2half(randn());
    __half *dx = dup(xh);
    int4 *ditems = dalloc<int4>(ni + 1);   /* one more, left poisoned: the grid has room for 4 items, *nitems says 3 */
    CU(cudaMemcpy(ditems, items_h, sizeof items_h, cudaMemcpyHostToDevice));
    int *dni = dup(std::vector<int>{ni});
    float *dc = dalloc<float>((size_t)P * 2 * M);
    for (uint32_t t : TYPES) {
        if (type_is_float_d((int)t)) continue;
        HostW wg = make_w(t, Kd, (long)NE * M), wu = make_w(t, Kd, (long)NE * M);
        uint8_t *dg = dup(wg.q), *du = dup(wu.q);
        const DT g = {dg, (int)t, Kd, (long)NE * M, wg.rb}, u = {du, (int)t, Kd, (long)NE * M, wu.rb};
        poison(dc, (size_t)P * 2 * M * sizeof(float));
        const bool launched = expert_gemm(g, &u, M, ditems, dni, ni + 1, dx, Kd, dc, 2 * M, M, 0);
        CU(cudaGetLastError());
        CU(cudaDeviceSynchronize());
        std::vector<float> c = back(dc, (size_t)P * 2 * M);
        double worst = 0;
        bool ok = launched;
        for (int s = 0; s < P; s++)
            for (int col = 0; col < 2 * M; col++) {
                const float got = c[(size_t)s * 2 * M + col];
                if (owner[s] < 0) {   /* nobody's row: untouched */
                    uint32_t bits;
                    memcpy(&bits, &got, 4);
                    if (bits != 0xFFFFFFFFu) ok = false;
                    continue;
                }
                const HostW &w = col < M ? wg : wu;
                const float *wr = w.f.data() + ((size_t)owner[s] * M + col % M) * Kd;
                double ref = 0, mag = 0;
                for (int k = 0; k < Kd; k++) {
                    const double p = (double)__half2float(__float2half(wr[k])) * __half2float(xh[(size_t)s * Kd + k]);
                    ref += p;
                    mag += fabs(p);
                }
                /* the kernel rounds each block's scale to f16 before it multiplies: ~2^-11 per weight */
                const double e = fabs(got - ref) / (mag + 1e-6);
                if (!(e <= 1e-3)) ok = false;
                if (e > worst || e != e) worst = e;
            }
        report(ok, "expert gemm %s: 3 experts x %d rows x %d, gate|up, items of 32/8/17 slot rows%s (worst |d|/sum|w.x| %.2g)", tname(t), M, Kd,
               launched ? "" : " NOT LAUNCHED", worst);
        cudaFree(dg);
        cudaFree(du);
    }
    cudaFree(dx);
    cudaFree(ditems);
    cudaFree(dni);
    cudaFree(dc);
}

/* Prefill routing on the device (k_route) against the host's counting sort: slot rows by
 * expert in entry order, perm, slot_of, the work items and their count; an id out of range
 * must raise the flag. */
static void test_route(int n, int K, int ne, bool skewed) {
    const int nsel = n * K;
    std::vector<int> sel(nsel);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < K; k++) {   /* K distinct experts per token, as top-k gives */
            int e;
            bool dup;
            do {
                e = skewed ? (int)(fabsf(randn()) * 3) % ne : (int)((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 33) % ne;
                dup = false;
                for (int j = 0; j < k; j++) dup |= sel[i * K + j] == e;
            } while (dup);
            sel[i * K + k] = e;
        }
    std::vector<int> cnt(ne, 0), off(ne + 1, 0), perm(nsel), slot(nsel);
    for (int e : sel) cnt[e]++;
    for (int e = 0; e < ne; e++) off[e + 1] = off[e] + cnt[e];
    std::vector<int> fill(off.begin(), off.end() - 1);
    for (int i = 0; i < nsel; i++) { slot[i] = fill[sel[i]]++; perm[slot[i]] = i / K; }
    std::vector<int4> items;
    for (int e = 0; e < ne; e++)
        for (int t = 0; t < cnt[e]; t += MG_BN) items.push_back(make_int4(e, off[e] + t, std::min(MG_BN, cnt[e] - t), 0));
    int *dsel = dup(sel), *dperm = dalloc<int>(nsel), *dslot = dalloc<int>(nsel), *dni = dalloc<int>(1), *dcnt = dalloc<int>(ne), *dbad = dalloc<int>(1);
    int4 *ditems = dalloc<int4>(ne + nsel / MG_BN + 1);
    CU(cudaMemset(dbad, 0, sizeof(int)));
    k_route<<<1, RTE_WARPS * WARP, route_smem(ne)>>>(dsel, nsel, K, ne, dperm, dslot, ditems, dni, dcnt, dbad);
    CU(cudaGetLastError());
    CU(cudaDeviceSynchronize());
    const int ni = back(dni, 1)[0], bad = back(dbad, 1)[0];
    bool ok = ni == (int)items.size() && !bad && back(dperm, nsel) == perm && back(dslot, nsel) == slot && back(dcnt, ne) == cnt;
    if (ok) {
        std::vector<int4> gi = back(ditems, ni);
        for (int i = 0; i < ni; i++) ok = ok && gi[i].x == items[i].x && gi[i].y == items[i].y && gi[i].z == items[i].z;
    }
    sel[nsel / 2] = ne;   /* out of range */
    CU(cudaMemcpy(dsel, sel.data(), sizeof(int) * nsel, cudaMemcpyHostToDevice));
    k_route<<<1, RTE_WARPS * WARP, route_smem(ne)>>>(dsel, nsel, K, ne, dperm, dslot, ditems, dni, nullptr, dbad);
    CU(cudaDeviceSynchronize());
    const bool flagged = back(dbad, 1)[0] == 1;
    report(ok && flagged, "k_route %d tokens x %d of %d experts%s: %d items (host %zu), perm/slots/items/counts %s, bad id %s", n, K, ne, skewed ? " (skewed)" : "",
           ni, items.size(), ok ? "match" : "DIFFER", flagged ? "flagged" : "NOT FLAGGED");
    for (void *p : {(void *)dsel, (void *)dperm, (void *)dslot, (void *)dni, (void *)dcnt, (void *)dbad, (void *)ditems}) cudaFree(p);
}

/* quantize x on the device and return its dequantized value as the CPU sees it */
static void quant_x(const std::vector<float> &x, float **dxf, int8_t **dxq, float **dxd, std::vector<float> &xdq) {
    const int n = (int)x.size();
    *dxf = dup(x);
    *dxq = dalloc<int8_t>(n + 256);
    *dxd = dalloc<float>(n / 32 + 8);
    xdq = x;
    if (n % 32) { *dxq = nullptr; *dxd = nullptr; return; }
    k_quant<<<cdiv(n / 32, 8), 256>>>(*dxf, n / 32, *dxq, *dxd);
    CU(cudaGetLastError());
    std::vector<int8_t> q = back(*dxq, n);
    std::vector<float> d = back(*dxd, n / 32);
    bool ok = true;
    for (int i = 0; i < n; i++) {
        xdq[i] = (float)q[i] * d[i / 32];
        if (!(fabsf(xdq[i] - x[i]) <= d[i / 32] * 0.5001f + 1e-12f)) ok = false;
    }
    static int once = 0;
    if (!once++ || !ok) report(ok, "int8 activation quantization (n=%d): |q*d - x| <= d/2", n);
}

static void check_vec(const char *what, const std::vector<float> &got, const std::vector<double> &ref, const std::vector<double> &scale, double rtol) {
    double worst = 0;
    bool ok = true;
    for (size_t i = 0; i < got.size(); i++) {
        const double e = fabs((double)got[i] - ref[i]) / (scale[i] + 1e-30);
        if (!(e <= rtol)) ok = false;
        if (e > worst || e != e) worst = e;
    }
    report(ok, "%s (worst %.3g of tolerance %.1g)", what, worst, rtol);
}

static void test_mmv() {
    for (uint32_t t : TYPES) {
        const int b = blk(t);
        const int shapes[2][2] = {{2048, 37}, {b == 256 ? 1280 : b == 32 ? 32 * 41 : 333, 19}};
        for (int si = 0; si < 2; si++) {
            const int ncols = shapes[si][0], nrows = shapes[si][1];
            HostW w = make_w(t, ncols, nrows);
            std::vector<float> x(ncols);
            for (auto &v : x) v = randn();
            float *xf, *xd;
            int8_t *xq;
            std::vector<float> xdq;
            quant_x(x, &xf, &xq, &xd, xdq);
            uint8_t *dw = dup(w.q);
            float *y = dalloc<float>(nrows);
            /* 0/2/4: int8 activations, 1/3: f32 activations; 0/1 staged kernel (0: the one the
             * decode path picks, specialized for the type where there is one), 2/3 direct,
             * 4: the generic staged kernel on a type that also has a specialized one */
            for (int mode = 0; mode < 5; mode++) {
                if (mode % 2 == 0 && !xq) continue;
                if (mode == 4 && spec_type(t, true) == SPEC_NONE) continue;
                poison(y, nrows * 4);
                MVArgs a;
                memset(&a, 0, sizeof a);
                a.s[0] = {dw, y, w.rb, (int)t, ncols, nrows, 0, 0};
                a.nseg = 1;
                a.xf = xf;
                a.xq = mode % 2 == 0 ? xq : nullptr;
                a.xd = xd;
                if (mode < 2 || mode == 4) {
                    const int cap = type_is_float_d(t) ? 16 : stage_cap(w.rb);
                    const MmvKernel k = mode == 4 ? k_mmv2<SPEC_NONE> : mmv2_kernel(spec_type(t, a.xq != nullptr));
                    k<<<cdiv(nrows, MV2_WARPS * MV2_R), MV2_WARPS * WARP, mmv2_smem(ncols, cap)>>>(a, cap, ncols);
                } else {
                    k_mmv<2><<<cdiv(nrows, 16), NTHR>>>(a);
                }
                CU(cudaGetLastError());
                std::vector<float> got = back(y, nrows);
                const std::vector<float> &xs = (mode % 2 == 0 || type_is_float_d(t)) && xq ? xdq : x;
                std::vector<double> ref(nrows), sc(nrows);
                for (int r = 0; r < nrows; r++) {
                    double s = 0, a2 = 0;
                    for (int i = 0; i < ncols; i++) { s += (double)w.f[(size_t)r * ncols + i] * xs[i]; a2 += fabs((double)w.f[(size_t)r * ncols + i] * xs[i]); }
                    ref[r] = s;
                    sc[r] = a2;
                }
                /* float types always use f32 x; compare them against the f32 x */
                if (type_is_float_d(t)) {
                    for (int r = 0; r < nrows; r++) {
                        double s = 0;
                        for (int i = 0; i < ncols; i++) s += (double)w.f[(size_t)r * ncols + i] * x[i];
                        ref[r] = s;
                    }
                }
                char what[128];
                snprintf(what, sizeof what, "matvec %s %s %dx%d %s", mode == 4 ? "staged generic" : mode < 2 ? (mode == 0 && spec_type(t, true) != SPEC_NONE ? "staged specialized" : "staged") : "direct",
                         tname(t), nrows, ncols, mode % 2 == 0 ? "int8-x" : "f32-x");
                check_vec(what, got, ref, sc, 2e-5);
            }
            cudaFree(dw); cudaFree(y); cudaFree(xf); if (xq) cudaFree(xq); if (xd) cudaFree(xd);
        }
    }
    /* three segments of different types in one launch, the last accumulating */
    {
        const int ncols = 1024;
        const uint32_t ts[3] = {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0};
        const int nr[3] = {40, 9, 23};
        std::vector<float> x(ncols);
        for (auto &v : x) v = randn();
        float *xf, *xd;
        int8_t *xq;
        std::vector<float> xdq;
        quant_x(x, &xf, &xq, &xd, xdq);
        MVArgs a;
        memset(&a, 0, sizeof a);
        HostW w[3];
        float *y[3];
        std::vector<float> init(nr[2]);
        for (auto &v : init) v = randn();
        int blocks = 0;
        for (int s = 0; s < 3; s++) {
            w[s] = make_w(ts[s], ncols, nr[s]);
            y[s] = s == 2 ? dup(init) : dalloc<float>(nr[s]);
            a.s[s] = {dup(w[s].q), y[s], w[s].rb, (int)ts[s], ncols, nr[s], s == 2, blocks};
            blocks += cdiv(nr[s], 16);
        }
        a.nseg = 3; a.xf = xf; a.xq = xq; a.xd = xd;
        int cap = 16, b2 = 0;
        for (int s = 0; s < 3; s++) { cap = std::max(cap, stage_cap(w[s].rb)); a.s[s].blk0 = b2; b2 += cdiv(nr[s], MV2_WARPS * MV2_R); }
        k_mmv2<SPEC_NONE><<<b2, MV2_WARPS * WARP, mmv2_smem(ncols, cap)>>>(a, cap, ncols);
        (void)blocks;
        CU(cudaGetLastError());
        for (int s = 0; s < 3; s++) {
            std::vector<float> got = back(y[s], nr[s]);
            std::vector<double> ref(nr[s]), sc(nr[s]);
            for (int r = 0; r < nr[s]; r++) {
                double v = s == 2 ? init[r] : 0, a2 = s == 2 ? fabs(init[r]) : 0;
                for (int i = 0; i < ncols; i++) { v += (double)w[s].f[(size_t)r * ncols + i] * xdq[i]; a2 += fabs((double)w[s].f[(size_t)r * ncols + i] * xdq[i]); }
                ref[r] = v; sc[r] = a2;
            }
            char what[96];
            snprintf(what, sizeof what, "matvec 3 segments in one launch: segment %d (%s%s)", s, tname(ts[s]), s == 2 ? ", accumulate" : "");
            check_vec(what, got, ref, sc, 2e-5);
        }
    }
}

static double silu_d(double g) { return g / (1.0 + exp(-g)); }

/* gate+up+SwiGLU of the K selected experts in double precision, with the scale each
 * output's error is measured against */
static void ref_gateup(const HostW &wg, const HostW &wu, const std::vector<int> &sel, int K, int F, int E, const std::vector<float> &xs,
                       std::vector<double> &ref, std::vector<double> &sc) {
    ref.assign((size_t)K * F, 0);
    sc.assign((size_t)K * F, 0);
    for (int k = 0; k < K; k++)
        for (int r = 0; r < F; r++) {
            double g = 0, u = 0, ag = 0, au = 0;
            const size_t row = ((size_t)sel[k] * F + r) * E;
            for (int i = 0; i < E; i++) {
                g += (double)wg.f[row + i] * xs[i]; ag += fabs((double)wg.f[row + i] * xs[i]);
                u += (double)wu.f[row + i] * xs[i]; au += fabs((double)wu.f[row + i] * xs[i]);
            }
            ref[k * F + r] = silu_d(g) * u;
            sc[k * F + r] = (fabs(silu_d(g)) + 1) * au + fabs(u) * ag + 1e-6;
        }
}

static void test_experts() {
  for (int variant = 0; variant < 3; variant++)   /* 0: staged, down 8 rows; 1: staged, down 2 rows; 2: direct */
    for (uint32_t t : TYPES) {
        const int b = blk(t);
        const int E = b == 1 ? 264 : 512, F = b == 256 ? 256 : b == 32 ? 96 : 40, NE = 5, K = 3;
        const int Fpad = (F + 31) / 32 * 32;
        HostW wg = make_w(t, E, (long)F * NE), wu = make_w(t, E, (long)F * NE), wd = make_w(t, F, (long)E * NE);
        std::vector<float> x(E), res(E);
        for (auto &v : x) v = randn();
        for (auto &v : res) v = randn();
        float *xf, *xd;
        int8_t *xq;
        std::vector<float> xdq;
        quant_x(x, &xf, &xq, &xd, xdq);
        const std::vector<int> sel = {3, 0, 4};
        const std::vector<float> selw = {0.5f, 0.3f, 0.2f};
        int *dsel = dup(sel);
        float *dselw = dup(selw), *dres = dup(res);
        uint8_t *dg = dup(wg.q), *du = dup(wu.q), *dd = dup(wd.q);
        float *h = dalloc<float>((size_t)K * Fpad), *hd = dalloc<float>((size_t)K * Fpad / 32 + 8);
        int8_t *hq = dalloc<int8_t>((size_t)K * Fpad + 256);
        if (variant < 2) {
            /* variant 1: a small staging cap, so rows go through several chunks */
            const int cap = variant == 0 ? std::min(1536, stage_cap(wg.rb)) : std::min(stage_cap(wg.rb), 256 + 48);
            /* variant 0: the kernel decode picks (specialized where the type has one); 1: generic */
            const GateUpKernel kg = variant == 0 ? gateup2_kernel(spec_type(t, xq != nullptr)) : k_gateup2<3>;
            kg<<<dim3(cdiv(F, 32), K), NTHR, gateup2_smem(E, cap)>>>(dg, (int)t, wg.rb, du, (int)t, wu.rb, E, F, dsel, xf, xq, xd, h, hq, hd, Fpad, cap, nullptr, 0.f);
        } else {
            k_gateup<<<dim3(cdiv(F, 32), K), NTHR>>>(dg, (int)t, wg.rb, du, (int)t, wu.rb, E, F, dsel, xf, xq, xd, h, hq, hd, Fpad);
        }
        CU(cudaGetLastError());
        std::vector<float> gh = back(h, (size_t)K * F);
        std::vector<int8_t> ghq = back(hq, (size_t)K * Fpad);
        std::vector<float> ghd = back(hd, (size_t)K * Fpad / 32);
        std::vector<double> ref, sc;
        ref_gateup(wg, wu, sel, K, F, E, type_is_float_d(t) ? x : xdq, ref, sc);
        char what[128];
        static const char *vn[3] = {"staged", "staged in small chunks", "direct"};
        snprintf(what, sizeof what, "%s gate+up+SwiGLU, k=%d experts in one launch, %s E=%d F=%d", vn[variant], K, tname(t), E, F);
        check_vec(what, gh, ref, sc, 2e-5);
        /* down with the h the kernel produced (int8 for quant types, f32 for float types) */
        std::vector<float> hx((size_t)K * F);
        for (int k = 0; k < K; k++)
            for (int r = 0; r < F; r++)
                hx[k * F + r] = type_is_float_d(t) ? gh[k * F + r] : (float)ghq[k * Fpad + r] * ghd[(k * Fpad + r) / 32];
        const int capd = variant == 0 ? std::min(1024, stage_cap(wd.rb)) : std::min(stage_cap(wd.rb), 256 + 48);
        if (variant < 2) {
            const DownKernel kd = variant == 0 ? down2_kernel(spec_type(t, hq != nullptr)) : k_down2<8, 2>;
            kd<<<cdiv(E, 8), NTHR, down2_smem(F, 8, capd)>>>(dd, (int)t, wd.rb, F, E, dsel, dselw, K, h, hq, hd, Fpad, dres, capd);
        }
        else k_down<<<cdiv(E, 8), NTHR>>>(dd, (int)t, wd.rb, F, E, dsel, dselw, K, h, hq, hd, Fpad, dres);
        CU(cudaGetLastError());
        std::vector<float> got = back(dres, E);
        std::vector<double> r2(E), s2(E);
        for (int r = 0; r < E; r++) {
            double v = res[r], a = fabs(res[r]);
            for (int k = 0; k < K; k++) {
                const size_t row = ((size_t)sel[k] * E + r) * F;
                double s = 0, sa = 0;
                for (int i = 0; i < F; i++) { s += (double)wd.f[row + i] * hx[k * F + i]; sa += fabs((double)wd.f[row + i] * hx[k * F + i]); }
                v += selw[k] * s;
                a += selw[k] * sa;
            }
            r2[r] = v; s2[r] = a;
        }
        snprintf(what, sizeof what, "%s down x routing weights + residual, %s F=%d E=%d", vn[variant], tname(t), F, E);
        check_vec(what, got, r2, s2, 2e-5);
        cudaFree(dsel); cudaFree(dselw); cudaFree(dres); cudaFree(dg); cudaFree(du); cudaFree(dd); cudaFree(h); cudaFree(hd); cudaFree(hq);
        cudaFree(xf); if (xq) cudaFree(xq); if (xd) cudaFree(xd);
    }
}

static void test_rmsnorm_topk() {
    const int E = 2080, n = 3;
    std::vector<float> x((size_t)n * E), w(E);
    for (auto &v : x) v = randn() * 3;
    for (auto &v : w) v = 1 + 0.2f * randn();
    float *dx = dup(x), *dw = dup(w), *out = dalloc<float>((size_t)n * E), *od = dalloc<float>((size_t)n * E / 32);
    __half *o16 = dalloc<__half>((size_t)n * E);
    int8_t *oq = dalloc<int8_t>((size_t)n * E);
    k_rmsnorm<<<n, NTHR, E * 4>>>(dx, dw, E, 1e-6f, out, o16, oq, od);
    CU(cudaGetLastError());
    std::vector<float> got = back(out, (size_t)n * E), d = back(od, (size_t)n * E / 32);
    std::vector<__half> g16 = back(o16, (size_t)n * E);
    std::vector<int8_t> q = back(oq, (size_t)n * E);
    std::vector<double> ref((size_t)n * E), sc((size_t)n * E);
    bool qok = true, hok = true;
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int e = 0; e < E; e++) ss += (double)x[i * E + e] * x[i * E + e];
        const double s = 1.0 / sqrt(ss / E + 1e-6);
        for (int e = 0; e < E; e++) {
            ref[i * E + e] = x[i * E + e] * s * w[e];
            sc[i * E + e] = fabs(ref[i * E + e]) + 1e-3;
            const size_t k = (size_t)i * E + e;
            if (!(fabsf(q[k] * d[k / 32] - got[k]) <= d[k / 32] * 0.5001f)) qok = false;
            if (!(fabsf(__half2float(g16[k]) - got[k]) <= 1e-3f * fabsf(got[k]) + 1e-6f)) hok = false;
        }
    }
    check_vec("rmsnorm f32 (3 rows of 2080)", got, ref, sc, 1e-5);
    report(qok, "rmsnorm int8 copy within half a step");
    report(hok, "rmsnorm f16 copy");

    const int ne = 128, K = 8, nt = 5;
    std::vector<float> lg((size_t)nt * ne);
    for (auto &v : lg) v = 2 * randn();
    float *dl = dup(lg), *dsw = dalloc<float>(nt * K);
    int *ds = dalloc<int>(nt * K), *rec = dalloc<int>(nt * K);
    /* forced ids: a fixed pattern, 3 ints of padding between tokens (the stride) */
    const int fstride = K + 3;
    std::vector<int> fids((size_t)nt * fstride);
    for (int i = 0; i < nt; i++)
        for (int k = 0; k < fstride; k++) fids[(size_t)i * fstride + k] = (i * 37 + k * 11) % ne;
    int *dfids = dup(fids), *don = dalloc<int>(1), one = 1, zero = 0;
    CU(cudaMemcpy(don, &zero, sizeof(int), cudaMemcpyHostToDevice));
    k_topk<<<nt, WARP, ne * 4>>>(dl, ne, K, ds, dsw, rec, nullptr, dfids, fstride, don);
    CU(cudaGetLastError());
    std::vector<int> gs = back(ds, nt * K), gr = back(rec, nt * K);
    std::vector<float> gw = back(dsw, nt * K);
    CU(cudaMemcpy(don, &one, sizeof(int), cudaMemcpyHostToDevice));
    k_topk<<<nt, WARP, ne * 4>>>(dl, ne, K, ds, dsw, rec, nullptr, dfids, fstride, don);
    CU(cudaGetLastError());
    std::vector<int> fs = back(ds, nt * K), fr = back(rec, nt * K);
    std::vector<float> fw = back(dsw, nt * K);
    bool ok = true, fok = true;
    double worst = 0;
    for (int i = 0; i < nt; i++) {
        std::vector<double> p(ne);
        double mx = -1e30, sum = 0;
        for (int e = 0; e < ne; e++) mx = std::max(mx, (double)lg[i * ne + e]);
        for (int e = 0; e < ne; e++) { p[e] = exp(lg[i * ne + e] - mx); sum += p[e]; }
        std::vector<int> idx(ne);
        for (int e = 0; e < ne; e++) idx[e] = e;
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return p[a] > p[b]; });
        double ws = 0;
        for (int k = 0; k < K; k++) ws += p[idx[k]];
        for (int k = 0; k < K; k++) {
            if (gs[i * K + k] != idx[k] || gr[i * K + k] != idx[k]) ok = false;
            const double e = fabs(gw[i * K + k] - p[idx[k]] / ws);
            if (!(e < 1e-5)) ok = false;
            worst = std::max(worst, e);
        }
        /* forced: the given ids, weighted by this router's probabilities renormalized over them; rec still the own choice */
        double fs_ = 0;
        for (int k = 0; k < K; k++) fs_ += p[fids[(size_t)i * fstride + k]];
        for (int k = 0; k < K; k++) {
            const int e = fids[(size_t)i * fstride + k];
            if (fs[i * K + k] != e || fr[i * K + k] != idx[k]) fok = false;
            if (!(fabs(fw[i * K + k] - p[e] / fs_) < 1e-5)) fok = false;
        }
    }
    report(ok, "router top-%d of %d: ids in descending order and renormalized weights (worst %.2g)", K, ne, worst);
    report(fok, "router with forced expert ids: the given ids, weights renormalized over them, own choice still recorded");
    cudaFree(dx); cudaFree(dw); cudaFree(out); cudaFree(od); cudaFree(o16); cudaFree(oq); cudaFree(dl); cudaFree(dsw); cudaFree(ds); cudaFree(rec);
    cudaFree(dfids); cudaFree(don);
}

/* RMSNorm as norm_x computes it (f32, eps 1e-6), and the int8 rounding warp_quant applies */
static std::vector<float> host_rmsnorm(const std::vector<float> &x, const std::vector<float> &w) {
    double ss = 0;
    for (float v : x) ss += (double)v * v;
    const float sc = 1.0f / sqrtf((float)(ss / x.size()) + 1e-6f);
    std::vector<float> o(x.size());
    for (size_t i = 0; i < x.size(); i++) o[i] = w[i] * x[i] * sc;
    return o;
}
static std::vector<float> host_q8(const std::vector<float> &v) {
    std::vector<float> o(v);
    for (size_t g = 0; g + 32 <= v.size(); g += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = std::max(amax, fabsf(v[g + j]));
        const float s = amax / 127.f;
        for (int j = 0; j < 32; j++) o[g + j] = amax > 0 ? std::max(-127.f, std::min(127.f, nearbyintf(v[g + j] / s))) * s : 0.f;
    }
    return o;
}

/* RMSNorm folded into the staged matvec and gate+up: the kernels get the residual and the
 * norm weights, and must give what the normed (and, in int8 mode, quantized) x gives. One
 * int8 rounding step that lands the other way moves a sum by ~1e-5 of its scale; 5e-5. */
static void test_norm_fused() {
    const uint32_t ts[] = {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0, GGML_TYPE_IQ4_XS, GGML_TYPE_Q4_0, GGML_TYPE_F16, GGML_TYPE_F32};
    for (uint32_t t : ts) {
        const int ncols = t == GGML_TYPE_Q4_0 ? 1056 : 2048, nrows = 21;
        HostW w = make_w(t, ncols, nrows);
        std::vector<float> r(ncols), nw(ncols);
        for (auto &v : r) v = 3 * randn();
        for (auto &v : nw) v = 1 + 0.2f * randn();
        const std::vector<float> xn = host_rmsnorm(r, nw), xq = host_q8(xn);
        float *dr = dup(r), *dnw = dup(nw), *y = dalloc<float>(nrows), *dxd = dalloc<float>(ncols / 32 + 8);
        int8_t *dxq = dalloc<int8_t>(ncols + 256);   /* only a flag for int8 mode: the kernel must not read it */
        uint8_t *dw = dup(w.q);
        for (int mode = 0; mode < 2; mode++) {   /* 0: int8 activations, 1: f32 */
            const bool i8 = mode == 0 && !type_is_float_d(t);
            poison(y, nrows * 4);
            MVArgs a;
            memset(&a, 0, sizeof a);
            a.s[0] = {dw, y, w.rb, (int)t, ncols, nrows, 0, 0};
            a.nseg = 1; a.xf = dr; a.xq = mode == 0 ? dxq : nullptr; a.xd = dxd; a.nw = dnw; a.eps = 1e-6f;
            const int cap = type_is_float_d(t) ? 16 : stage_cap(w.rb);
            mmv2_kernel(spec_type(t, a.xq != nullptr))<<<cdiv(nrows, MV2_WARPS * MV2_R), MV2_WARPS * WARP, mmv2_smem(ncols, cap, true)>>>(a, cap, ncols);
            CU(cudaGetLastError());
            std::vector<float> got = back(y, nrows);
            const std::vector<float> &xs = i8 ? xq : xn;
            std::vector<double> ref(nrows), sc(nrows);
            for (int rr = 0; rr < nrows; rr++) {
                double s2 = 0, a2 = 0;
                for (int i = 0; i < ncols; i++) { s2 += (double)w.f[(size_t)rr * ncols + i] * xs[i]; a2 += fabs((double)w.f[(size_t)rr * ncols + i] * xs[i]); }
                ref[rr] = s2; sc[rr] = a2;
            }
            char what[128];
            snprintf(what, sizeof what, "matvec with RMSNorm folded in, %s %dx%d %s", tname(t), nrows, ncols, mode == 0 ? "int8-x" : "f32-x");
            check_vec(what, got, ref, sc, 5e-5);
        }
        /* gate+up with the norm folded in: 3 experts of F rows */
        if (!type_is_float_d(t) || t == GGML_TYPE_F16) {
            const int F = 64, NE = 4, K = 3, E = ncols, Fpad = 64;
            HostW wg = make_w(t, E, (long)F * NE), wu = make_w(t, E, (long)F * NE);
            const std::vector<int> sel = {2, 0, 3};
            int *dsel = dup(sel);
            uint8_t *dg = dup(wg.q), *du = dup(wu.q);
            float *h = dalloc<float>((size_t)K * Fpad), *hd = dalloc<float>((size_t)K * Fpad / 32 + 8);
            int8_t *hq = dalloc<int8_t>((size_t)K * Fpad + 256);
            for (int mode = 0; mode < 2; mode++) {
                const bool i8 = mode == 0 && !type_is_float_d(t);
                poison(h, (size_t)K * Fpad * 4);
                const int cap = std::min(1536, stage_cap(wg.rb));
                gateup2_kernel(spec_type(t, mode == 0))<<<dim3(cdiv(F, 32), K), NTHR, gateup2_smem(E, cap, true)>>>(dg, (int)t, wg.rb, du, (int)t, wu.rb, E, F, dsel, dr,
                                                                                       mode == 0 ? dxq : nullptr, dxd, h, hq, hd, Fpad, cap, dnw, 1e-6f);
                CU(cudaGetLastError());
                std::vector<float> gh = back(h, (size_t)K * F);
                std::vector<double> ref, sc;
                ref_gateup(wg, wu, sel, K, F, E, i8 ? xq : xn, ref, sc);
                char what[128];
                snprintf(what, sizeof what, "gate+up+SwiGLU with RMSNorm folded in, %s E=%d F=%d %s", tname(t), E, F, mode == 0 ? "int8-x" : "f32-x");
                check_vec(what, gh, ref, sc, 5e-5);
            }
            cudaFree(dsel); cudaFree(dg); cudaFree(du); cudaFree(h); cudaFree(hd); cudaFree(hq);
        }
        cudaFree(dr); cudaFree(dnw); cudaFree(y); cudaFree(dxd); cudaFree(dxq); cudaFree(dw);
    }
}

/* The fused decode router (matvec + softmax + top-k + renormalization in one launch)
 * against a double-precision CPU router: three launches in a row on the same counter
 * (own choice, forced ids, own choice on a new x), so a counter left non-zero by one
 * launch shows up as a missing result in the next. */
static void test_router(int E, int ne, int K, bool norm) {
    std::vector<float> w((size_t)ne * E), r0(E), r1(E), nw(E);
    for (auto &v : w) v = 0.05f * randn();
    for (auto &v : r0) v = 3 * randn();
    for (auto &v : r1) v = 3 * randn();
    for (auto &v : nw) v = 1 + 0.2f * randn();
    /* with norm the kernel gets the residual and normalizes it itself */
    const std::vector<float> x0 = norm ? host_rmsnorm(r0, nw) : r0, x1 = norm ? host_rmsnorm(r1, nw) : r1;
    float *dnw = dup(nw);
    std::vector<int> fids(K);
    for (int k = 0; k < K; k++) fids[k] = (k * 7 + 3) % ne;
    float *dw = dup(w), *dx0 = dup(norm ? r0 : x0), *dx1 = dup(norm ? r1 : x1), *dlog = dalloc<float>(ne), *dsw = dalloc<float>(K);
    int *ds = dalloc<int>(K), *drec = dalloc<int>(K), *dfids = dup(fids), *don = dalloc<int>(1), zero = 0, one = 1;
    float *drecp = dalloc<float>(K);
    unsigned *done = dalloc<unsigned>(1);
    CU(cudaMemset(done, 0, sizeof(unsigned)));
    const int grid = cdiv(ne, RT_WARPS);
    bool ok = true;
    double worst_l = 0, worst_w = 0;
    for (int run = 0; run < 3; run++) {
        const std::vector<float> &x = run == 2 ? x1 : x0;
        const bool forced = run == 1;
        CU(cudaMemcpy(don, forced ? &one : &zero, sizeof(int), cudaMemcpyHostToDevice));
        poison(ds, K * sizeof(int)); poison(dsw, K * sizeof(float)); poison(drec, K * sizeof(int)); poison(dlog, ne * sizeof(float)); poison(drecp, K * sizeof(float));
        k_router<<<grid, RT_WARPS * WARP, router_smem(ne, E, norm)>>>(dw, run == 2 ? dx1 : dx0, E, ne, K, dlog, done, ds, dsw, drec, drecp, dfids, don, run & 1,
                                                                     norm ? dnw : nullptr, 1e-6f);
        CU(cudaGetLastError());
        std::vector<int> gs = back(ds, K), gr = back(drec, K);
        std::vector<float> gw = back(dsw, K), gl = back(dlog, ne), grp = back(drecp, K);
        std::vector<unsigned> gd = back(done, 1);
        if (gd[0] != 0) ok = false;
        std::vector<double> lg(ne), p(ne);
        double mx = -1e30, sum = 0;
        for (int e = 0; e < ne; e++) {
            double a = 0, sc = 0;
            for (int i = 0; i < E; i++) { a += (double)w[(size_t)e * E + i] * x[i]; sc += fabs((double)w[(size_t)e * E + i] * x[i]); }
            lg[e] = a;
            const double err = fabs(gl[e] - a) / (sc + 1e-30);
            worst_l = std::max(worst_l, err);
            if (!(err < 1e-5)) ok = false;
            mx = std::max(mx, a);
        }
        for (int e = 0; e < ne; e++) { p[e] = exp(lg[e] - mx); sum += p[e]; }
        for (int e = 0; e < ne; e++) p[e] /= sum;
        std::vector<int> idx(ne);
        for (int e = 0; e < ne; e++) idx[e] = e;
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return p[a] > p[b]; });
        double ws = 0, fs = 0;
        for (int k = 0; k < K; k++) { ws += p[idx[k]]; fs += p[fids[k]]; }
        for (int k = 0; k < K; k++) {
            /* own choice: the same ids in the same order unless two probabilities tie to 1e-6 */
            const int own = gr[k];
            if (own < 0 || own >= ne || (own != idx[k] && !(fabs(p[own] - p[idx[k]]) < 1e-6))) ok = false;
            /* recp: the router's own probability of its own choice, before renormalization */
            if (own >= 0 && own < ne && !(fabs(grp[k] - p[own]) < 1e-6)) ok = false;
            const int want = forced ? fids[k] : own;
            if (gs[k] != want) ok = false;
            const double ref = (own >= 0 && own < ne) ? (forced ? p[fids[k]] / fs : p[own] / ws) : 0;
            const double err = fabs(gw[k] - ref);
            worst_w = std::max(worst_w, err);
            if (!(err < 1e-5)) ok = false;
        }
    }
    report(ok, "fused router%s E=%d, %d experts, top-%d: logits (worst rel %.2g), ids, own probabilities, weights (worst %.2g), forced ids, counter reset",
           norm ? " with RMSNorm" : "", E, ne, K, worst_l, worst_w);
    cudaFree(dw); cudaFree(dx0); cudaFree(dx1); cudaFree(dlog); cudaFree(dsw); cudaFree(ds); cudaFree(drec); cudaFree(dfids); cudaFree(don);
    cudaFree(done); cudaFree(dnw); cudaFree(drecp);
}

/* qk-norm + NEOX RoPE + cache write, then chunked attention + combine, vs CPU */
static void test_attention(int D, int nh, int nkv, int n_ctx, int pos0, int ntok, int ch) {
    const int kvdim = nkv * D, qdim = nh * D, stride = qdim + 2 * kvdim;
    const float theta = 10000.f, eps = 1e-6f, ts = powf(theta, -2.0f / D);
    std::vector<float> qkv((size_t)ntok * stride), qn(D), kn(D);
    for (auto &v : qkv) v = randn();
    for (auto &v : qn) v = 1 + 0.3f * randn();
    for (auto &v : kn) v = 1 + 0.3f * randn();
    std::vector<__half> kc((size_t)n_ctx * kvdim), vc((size_t)n_ctx * kvdim);
    for (size_t i = 0; i < kc.size(); i++) { kc[i] = __float2half(randn()); vc[i] = __float2half(randn()); }
    float *dqkv = dup(qkv), *dqn = dup(qn), *dkn = dup(kn);
    __half *dkc = dup(kc), *dvc = dup(vc);
    int *dpos = dup(std::vector<int>{pos0});
    k_qk_rope<<<dim3(nh + 2 * nkv, ntok), (D / 2 + 31) / 32 * 32>>>(dqkv, stride, nh, nkv, D, dqn, dkn, eps, dpos, ts, dkc, dvc, kvdim);
    CU(cudaGetLastError());
    /* CPU: norm + rope on a copy */
    std::vector<float> cq = qkv;
    for (int i = 0; i < ntok; i++) {
        for (int hh = 0; hh < nh + nkv; hh++) {
            float *v = &cq[(size_t)i * stride + hh * D];
            const float *w = hh < nh ? qn.data() : kn.data();
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)v[d] * v[d];
            const float s = 1.0f / sqrtf((float)(ss / D) + eps);
            for (int d = 0; d < D; d++) v[d] = v[d] * s * w[d];
            float th = (float)(pos0 + i);
            for (int d = 0; d < D / 2; d++) {
                const float c = cosf(th), sn = sinf(th), x0 = v[d], x1 = v[d + D / 2];
                v[d] = x0 * c - x1 * sn;
                v[d + D / 2] = x0 * sn + x1 * c;
                th *= ts;
            }
            if (hh >= nh)
                for (int d = 0; d < D; d++) kc[(size_t)(pos0 + i) * kvdim + (hh - nh) * D + d] = __float2half(v[d]);
        }
        for (int d = 0; d < kvdim; d++) vc[(size_t)(pos0 + i) * kvdim + d] = __float2half(qkv[(size_t)i * stride + qdim + kvdim + d]);
    }
    std::vector<float> gq = back(dqkv, (size_t)ntok * stride);
    std::vector<__half> gk = back(dkc, kc.size()), gv = back(dvc, vc.size());
    bool ok = true;
    for (int i = 0; i < ntok; i++)
        for (int e = 0; e < qdim; e++)
            if (!(fabsf(gq[(size_t)i * stride + e] - cq[(size_t)i * stride + e]) <= 1e-4f * (1 + fabsf(cq[(size_t)i * stride + e])))) ok = false;
    report(ok, "q RMSNorm per head + NEOX RoPE (D=%d, pos %d..%d)", D, pos0, pos0 + ntok - 1);
    ok = true;
    for (size_t i = 0; i < kc.size(); i++) {
        if (!(fabsf(__half2float(gk[i]) - __half2float(kc[i])) <= 2e-3f * (1 + fabsf(__half2float(kc[i]))))) ok = false;
        if (!(__half2float(gv[i]) == __half2float(vc[i]))) ok = false;
    }
    report(ok, "k norm + RoPE and v written to the f16 cache at their positions only");
    /* attention */
    const int nch = cdiv(n_ctx, ch);
    float *part = dalloc<float>((size_t)ntok * nh * nch * (D + 2));
    float *out = dalloc<float>((size_t)ntok * qdim), *od = dalloc<float>((size_t)ntok * qdim / 32);
    __half *o16 = dalloc<__half>((size_t)ntok * qdim);
    int8_t *oq = dalloc<int8_t>((size_t)ntok * qdim);
    const int G = nh / nkv, nhg = (G + ATT_HB - 1) / ATT_HB;
    const size_t smem = (size_t)(8 * ATT_HB + 4 * ATT_HB * D) * sizeof(float);
    const float scale = 1.0f / sqrtf((float)D);
    const dim3 grid(nkv * nhg, nch, ntok);
    switch (D / 32) {
    case 2: k_attn<2><<<grid, 128, smem>>>(dqkv, stride, nh, nkv, D, dkc, dvc, kvdim, dpos, ch, nch, scale, part); break;
    case 4: k_attn<4><<<grid, 128, smem>>>(dqkv, stride, nh, nkv, D, dkc, dvc, kvdim, dpos, ch, nch, scale, part); break;
    case 8: k_attn<8><<<grid, 128, smem>>>(dqkv, stride, nh, nkv, D, dkc, dvc, kvdim, dpos, ch, nch, scale, part); break;
    default: report(false, "test D"); return;
    }
    CU(cudaGetLastError());
    k_attn_combine<<<dim3(nh, ntok), D>>>(part, nh, D, ch, nch, dpos, out, o16, oq, od);
    CU(cudaGetLastError());
    std::vector<float> got = back(out, (size_t)ntok * qdim);
    std::vector<double> ref((size_t)ntok * qdim), sc((size_t)ntok * qdim);
    for (int i = 0; i < ntok; i++)
        for (int h = 0; h < nh; h++) {
            const int kvh = h / G, P = pos0 + i;
            std::vector<double> s(P + 1);
            double mx = -1e300;
            for (int t = 0; t <= P; t++) {
                double d = 0;
                for (int e = 0; e < D; e++) d += (double)gq[(size_t)i * stride + h * D + e] * __half2float(gk[(size_t)t * kvdim + kvh * D + e]);
                s[t] = d / sqrt((double)D);
                mx = std::max(mx, s[t]);
            }
            double sum = 0;
            for (int t = 0; t <= P; t++) { s[t] = exp(s[t] - mx); sum += s[t]; }
            for (int e = 0; e < D; e++) {
                double a = 0, aa = 0;
                for (int t = 0; t <= P; t++) {
                    const double v = __half2float(gv[(size_t)t * kvdim + kvh * D + e]);
                    a += s[t] * v; aa += s[t] * fabs(v);
                }
                ref[(size_t)i * qdim + h * D + e] = a / sum;
                sc[(size_t)i * qdim + h * D + e] = aa / sum + 1e-3;
            }
        }
    char what[160];
    snprintf(what, sizeof what, "attention GQA %d/%d heads D=%d, %d queries at %d, chunks of %d (causal, cache of %d)", nh, nkv, D, ntok, pos0, ch, n_ctx);
    check_vec(what, got, ref, sc, 1e-4);
    cudaFree(dqkv); cudaFree(dqn); cudaFree(dkn); cudaFree(dkc); cudaFree(dvc); cudaFree(dpos); cudaFree(part); cudaFree(out); cudaFree(od); cudaFree(o16); cudaFree(oq);
}

int main(int argc, char **argv) {
    int ndev = gpu_device_count();
    if (ndev <= 0) { printf("ok - no CUDA device: kernel tests skipped # SKIP\n0 passed, 0 failed\n"); return 0; }
    cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, 0));
    printf("# device: %s\n", p.name);
    CU(set_smem_attrs());
    if (argc > 1) rng ^= strtoull(argv[1], nullptr, 10) * 0x9e3779b97f4a7c15ull;
    test_dequant();
    test_dequant_flat();
    test_expert_gemm();
    test_route(512, 8, 128, false);
    test_route(512, 8, 128, true);
    test_route(37, 3, 12, false);
    test_mmv();
    test_experts();
    test_rmsnorm_topk();
    test_router(2048, 128, 8, false);
    test_router(258, 60, 4, false);
    test_router(256, 8, 2, false);
    test_router(2048, 128, 8, true);
    test_router(258, 60, 4, true);
    test_norm_fused();
    test_attention(128, 32, 4, 700, 517, 3, 256);
    test_attention(64, 6, 2, 300, 41, 5, 32);
    test_attention(256, 8, 8, 130, 129, 1, 64);
    test_attention(128, 12, 1, 1000, 999, 1, 256);
    test_attention(128, 8, 2, 2000, 1900, 2, 16);   /* 60 chunks of 32: the merge's several groups of AM_PRE */
    CU(cudaDeviceSynchronize());
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
