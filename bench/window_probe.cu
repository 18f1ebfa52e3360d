/* bench/window_probe.cu — why do phase D's o rows (4.7 MB) take ~6 us to reach shared
 * memory inside the persistent kernel when burst_probe pulls 4.7 MB in ~2.2 us? The same
 * burst asked for the way D asks: W warps a block (D: 8 of 16) each copy R consecutive rows
 * of RB bytes (D: a pair of 2,304-byte Q4_K rows, the pair of warp w in block b being
 * w * grid + b), by 16-byte cp.async a lane (optionally with D's L2 evict_first policy) or
 * by one bulk copy (TMA) a row; each burst between two grid barriers, from a random place
 * in a 12 GB span. us per burst, barrier included (the barrier alone: the first line).
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o build/window_probe bench/window_probe.cu
 *   build/window_probe                                                                  */
#include "probe_common.cuh"

#define WB 10752   /* the persistent kernel's staging bytes a warp */
__global__ void __launch_bounds__(WARPS * 32, 1) probe(const uint8_t *buf, size_t span, int W, int R, int RB, int hint, int bulk, int bursts,
                                                       unsigned *bar, unsigned long long *sink) {
    extern __shared__ __align__(128) uint8_t sm[];
    __shared__ __align__(8) uint64_t mbar[WARPS];
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const uint32_t mb = (uint32_t)__cvta_generic_to_shared(&mbar[w]);
    if (lane == 0) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(mb) : "memory");
    __syncthreads();
    const uint64_t pol = l2_evict_first();
    unsigned acc = 0, nb = 0, ph = 0;
    const size_t total = (size_t)gridDim.x * W * R * RB;
    for (int b = 0; b < bursts; b++) {
        const size_t base = ((size_t)mix(b * 7919u + 17u) * 4096 % (span - total)) & ~(size_t)4095;
        if (w < W && R * RB > 0) {
            const size_t g = (size_t)w * gridDim.x + blockIdx.x;
            const uint8_t *src = buf + base + g * R * RB;
            uint8_t *dst = sm + w * WB;
            if (bulk) {
                if (lane == 0) {
                    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mb), "r"(R * RB) : "memory");
                    for (int r = 0; r < R; r++)
                        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
                                         (uint32_t)__cvta_generic_to_shared(dst + r * (WB / R))),
                                     "l"(src + (size_t)r * RB), "r"(RB), "r"(mb), "l"(pol)
                                     : "memory");
                }
                asm volatile("{\n .reg .pred p;\n W%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W%=;\n}" ::"r"(mb), "r"(ph) : "memory");
                ph ^= 1u;
            } else {
                for (int r = 0; r < R; r++)
                    for (int k = lane; k < RB / 16; k += 32) {
                        uint8_t *d = dst + r * (WB / R) + 16 * k;
                        const uint8_t *g = src + (size_t)r * RB + 16 * k;
                        if (hint) cp16_hint(d, g, pol);
                        else asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((uint32_t)__cvta_generic_to_shared(d)), "l"(g) : "memory");
                    }
                asm volatile("cp.async.commit_group;" ::: "memory");
                asm volatile("cp.async.wait_all;" ::: "memory");
            }
            __syncwarp();
            acc += sm[w * WB + lane * 4];
        }
        grid_bar(bar, ++nb * gridDim.x);
    }
    if (acc == 0x12345678u) sink[0] = acc;
}
int main() {
    const size_t span = (size_t)12 << 30;
    int nsm = 0;
    uint8_t *buf; unsigned *bar; unsigned long long *sink;
    if (probe_setup(span, &nsm, &buf, &bar, &sink)) return 1;
    const int smem = WARPS * WB;
    CU(cudaFuncSetAttribute(probe, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    struct Cfg { int W, R, RB, hint, bulk; const char *what; };
    const Cfg cfgs[] = {
        {16, 0, 0, 0, 0, "barrier alone"},
        {8, 2, 2304, 1, 0, "D: 8 warps x 2 rows of 2304, cp.async evict_first"},
        {8, 2, 2304, 0, 0, "D, no L2 hint"},
        {16, 1, 2304, 1, 0, "16 warps x 1 row of 2304"},
        {16, 2, 1152, 1, 0, "16 warps x 2 rows of 1152 (same bytes)"},
        {8, 2, 2304, 1, 1, "D as bulk copies"},
        {16, 1, 2304, 1, 1, "16 warps x 1 row, bulk"},
        {16, 4, 1152, 1, 0, "A-like: 16 warps x 4 rows of 1152 (9.7 MB)"},
    };
    printf("%-52s %9s %9s %8s\n", "burst", "MB", "us/burst", "GB/s");
    for (const Cfg &c : cfgs) {
        int W = c.W, R = c.R, RB = c.RB, hint = c.hint, bulk = c.bulk, nb = 0;
        void *args[] = {(void *)&buf, (void *)&span, (void *)&W, (void *)&R, (void *)&RB, (void *)&hint, (void *)&bulk, (void *)&nb, (void *)&bar, (void *)&sink};
        double us = 0;
        if (probe_time((const void *)probe, nsm, smem, args, &nb, 400, bar, &us)) return 1;
        const double bytes = (double)nsm * c.W * c.R * c.RB;
        printf("%-52s %9.2f %9.2f %8.0f\n", c.what, bytes / 1e6, us, bytes / (us * 1e-6) / 1e9);
    }
    return 0;
}
