/* bench/phase_probe.cu — which part of the persistent kernel's context makes phase D's
 * window slow? Inside k_persist every block's first load after D's pass (a's 5 KB, from L2)
 * returns ~3.5 us late and D's 6 MB of window copies take ~8 us, while bench/window_probe.cu
 * pulls the same burst in ~1.8 us. Here a "layer" is rebuilt one ingredient at a time:
 *   A: the first 72 blocks (its q/k blocks) busy with shared-memory dp4a steps first (busy);
 *   F: an expert-like stream (S bytes a block of 16-byte cp.async, 3 rows of 1,152 in flight
 *      a warp, evict_first) and, optionally, F's fixed-point adds (red.add.u64: 196K a layer
 *      on 2,048 addresses);
 *   the barrier to D, with D's rows (8 warps x 2 rows of 2,304 a block: 4.9 MB) asked for in
 *      its window (after the arrival, while thread 0 polls) or after it;
 *   D: every block loads 5 KB that the other blocks wrote before the barrier (a), stamps
 *      the time from its pass (block 0's is reported), then waits for its rows.
 * Prints us per layer and block 0's first-load latency after D's pass.
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o build/phase_probe bench/phase_probe.cu
 *   build/phase_probe                                                                    */
#include "probe_common.cuh"

#define WB 10752
__device__ __forceinline__ unsigned long long gt() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
struct Mode { int fbytes, atomics, window, nd, busy; const char *what; };
__global__ void __launch_bounds__(WARPS * 32, 1) probe(const uint8_t *w, size_t span, Mode m, int layers, uint8_t *act, unsigned long long *acc,
                                                       unsigned *bar, unsigned long long *lat) {
    extern __shared__ __align__(128) uint8_t sm[];
    const int wp = threadIdx.x / 32, lane = threadIdx.x % 32, G = gridDim.x;
    const uint64_t pol = l2_evict_first();
    unsigned nb = 0;
    unsigned long long tot = 0;
    const size_t drows = (size_t)G * 8 * 2 * 2304;
    const bool dblk = (int)blockIdx.x >= G - m.nd;   /* the blocks that ask for D's rows */
    for (int l = 0; l < layers; l++) {
        const size_t base = ((size_t)mix(l * 7919u + 17u) * 4096 % (span - drows - (size_t)G * m.fbytes)) & ~(size_t)4095;
        /* F: the stream, 3 rows of 1,152 in flight a warp, then the adds */
        if (m.fbytes) {
            const uint8_t *src = w + base + drows + (size_t)blockIdx.x * m.fbytes + (size_t)wp * (m.fbytes / WARPS);
            const int rows = m.fbytes / WARPS / 1152;
            for (int r = 0; r < rows; r++) {
                uint8_t *dst = sm + wp * WB + (r % 4) * 1184;
                for (int k = lane; k < 72; k += 32) cp16_hint(dst + 16 * k, src + (size_t)r * 1152 + 16 * k, pol);
                asm volatile("cp.async.commit_group;" ::: "memory");
                asm volatile("cp.async.wait_group 3;" ::: "memory");
            }
            asm volatile("cp.async.wait_all;" ::: "memory");
        }
        if (m.atomics)
            for (int k = 0; k < 196608 / (G * WARPS * 32) + 1; k++)
                atomicAdd(acc + (threadIdx.x * 7 + k * 131 + blockIdx.x) % 2048, 1ull);
        /* a, written by every block before the barrier (B's output) */
        if (threadIdx.x < 40) ((uint4 *)act)[(blockIdx.x * 40 + threadIdx.x) % 320] = make_uint4(l, l, l, l);
        /* the barrier to D, D's rows asked for in its window or after it */
        const uint8_t *drow = w + base + ((size_t)wp * G + blockIdx.x) * 2 * 2304;
        auto ask = [&]() {
            if (wp < 8 && dblk) {
                for (int k = lane; k < 2 * 2304 / 16; k += 32) cp16_hint(sm + wp * WB + 16 * k, drow + 16 * k, pol);
                asm volatile("cp.async.commit_group;" ::: "memory");
            }
        };
        /* A's q/k blocks (the first 72) multiplying from shared memory while the others' windows fly */
        if ((int)blockIdx.x < 72 && m.busy) {
            int x = threadIdx.x;
            for (int i = 0; i < m.busy; i++) {
                const int4 q = *(const int4 *)(sm + ((threadIdx.x * 16 + i * 528) & (8 * WB - 16)));
                x = __dp4a(q.x, q.y, __dp4a(q.z, q.w, x));
            }
            if (x == 0x7fffffff) acc[0] = x;
        }
        grid_arrive(bar);
        if (m.window) ask();
        grid_wait(bar, ++nb * G);
        const unsigned long long t0 = gt();
        if (!m.window) ask();
        /* D: a's staging (plain loads past L1), then the rows */
        uint4 v = make_uint4(0, 0, 0, 0);
        if (threadIdx.x < 320) v = __ldcg((const uint4 *)act + threadIdx.x);
        ((uint4 *)(sm + 15 * WB))[threadIdx.x % 320] = v;
        __syncthreads();
        tot += gt() - t0;
        asm volatile("cp.async.wait_all;" ::: "memory");
        __syncthreads();
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) lat[0] = tot / layers;
}
int main() {
    const size_t span = (size_t)12 << 30;
    int nsm = 0;
    uint8_t *w, *act; unsigned *bar; unsigned long long *acc, *lat;
    if (probe_setup(span, &nsm, &w, &bar, &lat)) return 1;
    CU(cudaMalloc(&act, 8192)); CU(cudaMalloc(&acc, 2048 * 8));
    const int smem = WARPS * WB;
    CU(cudaFuncSetAttribute(probe, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const int F = 245760;   /* an F item block's bytes (96 of 132 blocks in the kernel; here all) */
    const Mode modes[] = {
        {0, 0, 0, 0, 0, "no rows: barrier + a's load"},
        {0, 0, 0, 1 << 30, 0, "D's rows asked after the pass"},
        {0, 0, 1, 1 << 30, 0, "D's rows asked in the window"},
        {0, 0, 1, 56, 0, "in the window, 56 blocks only"},
        {F, 0, 1, 1 << 30, 0, "F's stream, then the window"},
        {F, 1, 1, 1 << 30, 0, "F's stream and adds, then the window"},
        {0, 1, 1, 1 << 30, 0, "F's adds alone, then the window"},
        {0, 0, 1, 1 << 30, 60, "72 blocks busy 60 steps, then the window"},
        {0, 0, 1, 1 << 30, 120, "72 blocks busy 120 steps, then the window"},
        {0, 0, 1, 60, 120, "busy 120; the 60 others' window only"},
    };
    printf("%-42s %10s %16s\n", "layer", "us/layer", "a's load, us");
    for (Mode md : modes) {
        md.nd = md.nd > nsm ? nsm : md.nd;
        int nl = 0;
        void *args[] = {(void *)&w, (void *)&span, (void *)&md, (void *)&nl, (void *)&act, (void *)&acc, (void *)&bar, (void *)&lat};
        double us = 0;
        if (probe_time((const void *)probe, nsm, smem, args, &nl, 400, bar, &us)) return 1;
        unsigned long long ns = 0;
        CU(cudaMemcpy(&ns, lat, 8, cudaMemcpyDeviceToHost));
        printf("%-42s %10.2f %16.2f\n", md.what, us, ns / 1e3);
        fflush(stdout);
    }
    return 0;
}
