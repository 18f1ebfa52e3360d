/* bench/stream_probe.cu — how fast can one block of 16 warps per SM pull weight rows
 * into shared memory, in bursts like the persistent decode kernel's phases? Each burst:
 * every warp copies R rows of RB bytes (half from one "expert" region, half from another,
 * as F's gate and up rows) into its buffer, waits for them, then the grid meets at a
 * barrier. Regions are picked at random over SPAN bytes of a large buffer (TLB reach).
 * Modes: cp.async 16-byte copies (plain, or marked L2 evict_first), and TMA bulk copies
 * (one cp.async.bulk per row, completion on an mbarrier).
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o build/stream_probe bench/stream_probe.cu
 *   build/stream_probe            (prints one line per configuration)                  */
#include "probe_common.cuh"

#define WB 9728

template <int MODE>   /* 0 cp.async, 1 cp.async evict_first, 2 TMA bulk */
__global__ void __launch_bounds__(WARPS * 32, 1) probe(const uint8_t *buf, size_t span, size_t region, int R, int RB, int bursts, unsigned *bar,
                                                       unsigned long long *sink) {
    extern __shared__ __align__(128) uint8_t sm[];
    __shared__ __align__(8) unsigned long long mbar[WARPS];
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32, gw = w * gridDim.x + blockIdx.x;
    uint8_t *dst = sm + w * WB;
    const size_t nreg = span / region, rows_per_reg = region / RB;
    if (MODE == 2 && lane == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"((unsigned)__cvta_generic_to_shared(&mbar[w])));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncwarp();
    unsigned phase = 0, acc = 0;
    for (int b = 0; b < bursts; b++) {
        const uint32_t h = mix(b * 7919u + 17u);
        /* the burst's two regions for this warp (16 "experts" a burst, as F) */
        const size_t ra = (h + (gw % 8) * 2) % nreg, rbg = (h + (gw % 8) * 2 + 1) % nreg;
        const size_t row0 = (size_t)(gw / 8) * (R / 2) % rows_per_reg;
        if (MODE < 2) {
            uint64_t pol = 0;
            if (MODE == 1) asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
            for (int r = 0; r < R; r++) {
                const uint8_t *src = buf + (r < R / 2 ? ra : rbg) * region + (row0 + r % (R / 2)) * RB;
                const unsigned sa = (unsigned)__cvta_generic_to_shared(dst + r * (WB / R));
                for (int k = lane; k < RB / 16; k += 32) {
                    if (MODE == 1)
                        asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(sa + 16 * k), "l"(src + 16 * k), "l"(pol) : "memory");
                    else
                        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sa + 16 * k), "l"(src + 16 * k) : "memory");
                }
            }
            asm volatile("cp.async.commit_group;" ::: "memory");
            asm volatile("cp.async.wait_all;" ::: "memory");
        } else {
            const unsigned mb = (unsigned)__cvta_generic_to_shared(&mbar[w]);
            if (lane == 0) {
                asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mb), "r"(R * RB) : "memory");
                for (int r = 0; r < R; r++) {
                    const uint8_t *src = buf + (r < R / 2 ? ra : rbg) * region + (row0 + r % (R / 2)) * RB;
                    const unsigned sa = (unsigned)__cvta_generic_to_shared(dst + r * (WB / R));
                    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(sa), "l"(src), "r"(RB), "r"(mb)
                                 : "memory");
                }
            }
            unsigned done = 0;
            while (!done)
                asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(mb), "r"(phase) : "memory");
            phase ^= 1;
        }
        __syncwarp();
        acc += dst[lane * 4];
        if (bar) grid_bar(bar, (unsigned)(b + 1) * gridDim.x);
    }
    if (acc == 0x12345678u) sink[0] = acc;
}

int main() {
    int nsm = 0;
    CU(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, 0));
    const size_t total = (size_t)12 << 30;
    uint8_t *buf;
    CU(cudaMalloc(&buf, total));
    CU(cudaMemset(buf, 1, total));
    unsigned *bar;
    unsigned long long *sink;
    CU(cudaMalloc(&bar, 4));
    CU(cudaMalloc(&sink, 8));
    const int smem = WARPS * WB;
    CU(cudaFuncSetAttribute(probe<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    CU(cudaFuncSetAttribute(probe<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    CU(cudaFuncSetAttribute(probe<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0); cudaEventCreate(&e1);
    printf("%-10s %4s %5s %9s %4s %10s %8s\n", "mode", "R", "RB", "span MB", "bar", "us/burst", "GB/s");
    const char *names[3] = {"cp.async", "cp.async+ef", "tma"};
    for (int bar_on = 1; bar_on >= 0; bar_on--)
        for (size_t span : {(size_t)113 << 20, total})
            for (int R : {4, 8})
                for (int mode = 0; mode < 3; mode++) {
                    const int RB = 1152, bursts = 400;
                    const size_t region = 885 * 1024 / 1152 * 1152;
                    auto run = [&](int nb) -> cudaError_t {
                        cudaMemset(bar, 0, 4);
                        void *args[] = {(void *)&buf, (void *)&span, (void *)&region, (void *)&R, (void *)&RB, (void *)&nb, (void *)&bar, (void *)&sink};
                        unsigned *bp = bar_on ? bar : nullptr;
                        args[6] = (void *)&bp;
                        const void *k = mode == 0 ? (const void *)probe<0> : mode == 1 ? (const void *)probe<1> : (const void *)probe<2>;
                        return cudaLaunchCooperativeKernel(k, nsm, WARPS * 32, args, smem, 0);
                    };
                    CU(run(20));
                    CU(cudaDeviceSynchronize());
                    cudaEventRecord(e0);
                    CU(run(bursts));
                    cudaEventRecord(e1);
                    CU(cudaEventSynchronize(e1));
                    float ms = 0;
                    cudaEventElapsedTime(&ms, e0, e1);
                    const double bytes = (double)nsm * WARPS * R * RB * bursts;
                    printf("%-10s %4d %5d %9zu %4d %10.2f %8.0f\n", names[mode], R, RB, span >> 20, bar_on, ms * 1e3 / bursts, bytes / (ms * 1e-3) / 1e9);
                }
    return 0;
}
