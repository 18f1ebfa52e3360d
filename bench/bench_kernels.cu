/* bench/bench_kernels.cu — times the decode kernels of qwen3moe_cuda.cu on the
 * shapes of Qwen3-30B-A3B (random data, never zeros), reporting µs (median of 30
 * after warm-up, CUDA events) and achieved GB/s against the bytes each must move.
 * Several weight sets are rotated so that repeated runs do not measure L2. */
#define GGUF_IMPLEMENTATION
#include "../gguf.h"
#include "../qwen3moe_cuda.cu"
#include "../tests/randquant.h"
#include <algorithm>
#include <vector>

#define CU(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s: %s line %d\n", #x, cudaGetErrorString(e_), __LINE__); exit(1); } } while (0)
static uint64_t rng = 99;
static uint8_t *rand_dev(uint32_t t, long n_elems) {
    const size_t bytes = gguf_row_bytes(t, n_elems);
    std::vector<uint8_t> h(bytes);
    /* fill in slices to bound host time */
    const long slice = 1 << 22;
    for (long o = 0; o < n_elems; o += slice) {
        const long n = std::min(slice, n_elems - o);
        randquant_fill(t, h.data() + gguf_row_bytes(t, o), n, &rng, 0.5f);
    }
    uint8_t *d;
    CU(cudaMalloc(&d, bytes + 256));
    CU(cudaMemcpy(d, h.data(), bytes, cudaMemcpyHostToDevice));
    return d;
}
template <class F> static float time_us(F f, int reps = 30) {
    cudaEvent_t a, b;
    cudaEventCreate(&a); cudaEventCreate(&b);
    for (int i = 0; i < 3; i++) f(i);
    std::vector<float> t;
    for (int i = 0; i < reps; i++) {
        cudaEventRecord(a);
        f(i);
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        float ms; cudaEventElapsedTime(&ms, a, b);
        t.push_back(ms * 1000);
    }
    CU(cudaGetLastError());
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}
static void row(const char *name, float us, double bytes) {
    printf("%-44s %9.1f us %8.0f GB/s\n", name, us, bytes / (us * 1e-6) / 1e9);
}

int main() {
    const int E = 2048, F = 768, NE = 128, K = 8, V = 151936, QD = 4096, KVD = 512;
    const int NSET = 4;
    cudaDeviceProp p; CU(cudaGetDeviceProperties(&p, 0));
    printf("# %s, %d SMs, L2 %d MB\n", p.name, p.multiProcessorCount, p.l2CacheSize >> 20);
    CU(set_smem_attrs());
    /* activations */
    std::vector<float> xh(8192);
    for (auto &v : xh) v = randquant_unit(&rng) - 0.5f;
    float *xf, *xd, *y, *h, *hd;
    int8_t *xq, *hq;
    CU(cudaMalloc(&xf, 8192 * 4)); CU(cudaMalloc(&xd, 8192)); CU(cudaMalloc(&xq, 8192 + 256)); CU(cudaMalloc(&y, V * 4 + 1024));
    CU(cudaMalloc(&h, K * F * 4)); CU(cudaMalloc(&hq, K * F + 256)); CU(cudaMalloc(&hd, K * F / 8));
    CU(cudaMemcpy(xf, xh.data(), 8192 * 4, cudaMemcpyHostToDevice));
    k_quant<<<32, 256>>>(xf, 8192 / 32, xq, xd);
    k_quant<<<32, 256>>>(xf, K * F / 32, hq, hd);
    CU(cudaMemcpy(h, xh.data(), K * F * 4, cudaMemcpyHostToDevice));
    int *sel; float *selw;
    CU(cudaMalloc(&sel, 64 * 4)); CU(cudaMalloc(&selw, 64 * 4));
    std::vector<int> hs(64); std::vector<float> hw(64, 0.125f);
    for (int i = 0; i < 64; i++) hs[i] = (i * 37 + 5) % NE;
    CU(cudaMemcpy(sel, hs.data(), 64 * 4, cudaMemcpyHostToDevice)); CU(cudaMemcpy(selw, hw.data(), 64 * 4, cudaMemcpyHostToDevice));

    struct M { const char *name; uint32_t t; int ncols, nrows; };
    const M mats[] = {{"mmv q4_K 4096x2048 (attn_q)", GGML_TYPE_Q4_K, E, QD}, {"mmv q4_K 2048x4096 (attn_o)", GGML_TYPE_Q4_K, QD, E},
                      {"mmv q6_K 512x2048 (attn_v)", GGML_TYPE_Q6_K, E, KVD}, {"mmv q8_0 4096x2048", GGML_TYPE_Q8_0, E, QD},
                      {"mmv f32 128x2048 (router)", GGML_TYPE_F32, E, NE}, {"mmv q6_K 151936x2048 (output)", GGML_TYPE_Q6_K, E, V},
                      {"mmv q4_K 151936x2048", GGML_TYPE_Q4_K, E, V}};
    for (const M &m : mats) {
        const int nset = m.nrows > 100000 ? 1 : NSET;
        std::vector<uint8_t *> w;
        for (int s = 0; s < nset; s++) w.push_back(rand_dev(m.t, (long)m.ncols * m.nrows));
        const size_t rb = gguf_row_bytes(m.t, m.ncols);
        for (int var = 0; var < 2; var++) {
            const float us = time_us([&](int i) {
                MVArgs a; memset(&a, 0, sizeof a);
                a.s[0] = {w[i % nset], y, rb, (int)m.t, m.ncols, m.nrows, 0, 0};
                a.nseg = 1; a.xf = xf; a.xq = xq; a.xd = xd;
                if (var == 0) {
                    const int cap = type_is_float_d(m.t) ? 16 : stage_cap(rb);
                    mmv2_kernel(spec_type((int)m.t, a.xq != nullptr))<<<cdiv(m.nrows, MV2_WARPS * MV2_R), MV2_WARPS * WARP, mmv2_smem(m.ncols, cap)>>>(a, cap, m.ncols);
                } else {
                    k_mmv<2><<<cdiv(m.nrows, 16), NTHR>>>(a);
                }
            });
            char nm[96]; snprintf(nm, sizeof nm, "%s %s", m.name, var ? "direct" : "staged");
            row(nm, us, (double)rb * m.nrows);
        }
        for (auto p2 : w) cudaFree(p2);
    }
    const uint32_t et[] = {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    for (uint32_t t : et) {
        std::vector<uint8_t *> wg, wu, wd;
        for (int s = 0; s < 2; s++) { wg.push_back(rand_dev(t, (long)E * F * NE)); wu.push_back(rand_dev(t, (long)E * F * NE)); wd.push_back(rand_dev(t, (long)E * F * NE)); }
        const size_t rbe = gguf_row_bytes(t, E), rbf = gguf_row_bytes(t, F);
        char nm[96];
        const int capg = std::min(1536, stage_cap(rbe)), capd = std::min(1024, stage_cap(rbf));
        float us = time_us([&](int i) {
            k_gateup<<<dim3(cdiv(F, 32), K), NTHR>>>(wg[i % 2], (int)t, rbe, wu[i % 2], (int)t, rbe, E, F, sel + (i % 4) * 8, xf, xq, xd, h, hq, hd, F);
        });
        snprintf(nm, sizeof nm, "gate+up %s 8 experts of 768x2048 direct", gguf_type_get(t)->name);
        row(nm, us, 2.0 * K * F * rbe);
        us = time_us([&](int i) {
            gateup2_kernel(spec_type(t, true))<<<dim3(cdiv(F, 32), K), NTHR, gateup2_smem(E, capg)>>>(wg[i % 2], (int)t, rbe, wu[i % 2], (int)t, rbe, E, F, sel + (i % 4) * 8, xf, xq, xd, h, hq, hd, F, capg, nullptr, 0.f);
        });
        snprintf(nm, sizeof nm, "gate+up %s 8 experts of 768x2048 staged", gguf_type_get(t)->name);
        row(nm, us, 2.0 * K * F * rbe);
        us = time_us([&](int i) {
            k_down<<<cdiv(E, 8), NTHR>>>(wd[i % 2], (int)t, rbf, F, E, sel + (i % 4) * 8, selw, K, h, hq, hd, F, y);
        });
        snprintf(nm, sizeof nm, "down %s 8 experts of 2048x768 direct", gguf_type_get(t)->name);
        row(nm, us, 1.0 * K * E * rbf);
        us = time_us([&](int i) {
            down2_kernel(spec_type(t, true))<<<cdiv(E, 8), NTHR, down2_smem(F, 8, capd)>>>(wd[i % 2], (int)t, rbf, F, E, sel + (i % 4) * 8, selw, K, h, hq, hd, F, y, capd);
        });
        snprintf(nm, sizeof nm, "down %s 8 experts of 2048x768 staged", gguf_type_get(t)->name);
        row(nm, us, 1.0 * K * E * rbf);
        for (int s = 0; s < 2; s++) { cudaFree(wg[s]); cudaFree(wu[s]); cudaFree(wd[s]); }
    }
    /* prefill dequantization to f16: 32 experts of 768x2048 (a third of one layer's
     * gate at pp512), the one-thread-per-8 kernel vs the flat staged one */
    {
        const long nel = 32L * F * E;
        __half *o16; CU(cudaMalloc(&o16, nel * 2 + 256));
        const uint32_t dt[] = {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q5_K, GGML_TYPE_IQ4_XS};
        for (uint32_t t : dt) {
            uint8_t *wq[2] = {rand_dev(t, nel), rand_dev(t, nel)};
            const size_t rb = gguf_row_bytes(t, E);
            const double bytes = (double)rb * 32 * F + nel * 2.0;
            char nm[96];
            float us = time_us([&](int i) {
                const long total = (long)E / 8 * 32 * F;
                k_dequant_f16<<<(unsigned)((total + 255) / 256), 256>>>(wq[i % 2], (int)t, E, rb, 32 * F, o16, E);
            }, 10);
            snprintf(nm, sizeof nm, "dequant %s 32x768x2048 -> f16 generic", gguf_type_get(t)->name);
            row(nm, us, bytes);
            us = time_us([&](int i) { dequant_flat(wq[i % 2], (int)t, E, 32 * F, o16, E, 0); }, 10);
            snprintf(nm, sizeof nm, "dequant %s 32x768x2048 -> f16 flat", gguf_type_get(t)->name);
            row(nm, us, bytes);
            cudaFree(wq[0]); cudaFree(wq[1]);
        }
        cudaFree(o16);
    }
    /* small kernels */
    {
        float *w; CU(cudaMalloc(&w, E * 4)); CU(cudaMemcpy(w, xh.data(), E * 4, cudaMemcpyHostToDevice));
        float us = time_us([&](int) { k_rmsnorm<<<1, NTHR, E * 4>>>(xf, w, E, 1e-6f, y, nullptr, xq, xd); });
        row("rmsnorm 2048 (+int8)", us, E * 8.0);
        us = time_us([&](int) { k_topk<<<1, WARP, NE * 4>>>(xf, NE, K, sel + 32, selw + 32, nullptr, nullptr, 0, nullptr); });
        row("router top-8 of 128", us, NE * 4.0);
        const int n_ctx = 4096, nch = cdiv(n_ctx, ATT_CH);
        __half *kc, *vc; float *qkv, *part; int *pos;
        CU(cudaMalloc(&kc, (size_t)n_ctx * KVD * 2)); CU(cudaMalloc(&vc, (size_t)n_ctx * KVD * 2));
        CU(cudaMemset(kc, 0x11, (size_t)n_ctx * KVD * 2)); CU(cudaMemset(vc, 0x11, (size_t)n_ctx * KVD * 2));
        CU(cudaMalloc(&qkv, (QD + 2 * KVD) * 4)); CU(cudaMemcpy(qkv, xh.data(), (QD + 2 * KVD) * 4, cudaMemcpyHostToDevice));
        CU(cudaMalloc(&part, (size_t)32 * nch * 130 * 4)); CU(cudaMalloc(&pos, 4)); CU(cudaMemset(pos, 0, 4));
        us = time_us([&](int) { k_qk_rope<<<dim3(32 + 8, 1), 64>>>(qkv, QD + 2 * KVD, 32, 4, 128, w, w, 1e-6f, pos, 0.9f, kc, vc, KVD); });
        row("qk norm + rope + kv store", us, (QD + 2 * KVD) * 8.0);
        for (int P : {10, 1000, 4000}) {
            CU(cudaMemcpy(pos, &P, 4, cudaMemcpyHostToDevice));
            us = time_us([&](int) {
                k_attn<4><<<dim3(4, nch, 1), 128, (8 * ATT_HB + 4 * ATT_HB * 128) * 4>>>(qkv, QD + 2 * KVD, 32, 4, 128, kc, vc, KVD, pos, ATT_CH, nch, 0.088f, part);
                k_attn_combine<<<dim3(32, 1), 128>>>(part, 32, 128, ATT_CH, nch, pos, y, nullptr, xq, xd);
            });
            char nm[64]; snprintf(nm, sizeof nm, "attention (+combine) at pos %d", P);
            row(nm, us, (P + 1) * KVD * 4.0);
        }
    }
    return 0;
}
