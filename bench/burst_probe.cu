/* bench/burst_probe.cu — how fast do N of the grid's blocks (one of 16 warps an SM) pull a
 * phase's T bytes into shared memory, one burst between two grid barriers? Decides whether
 * a phase's rows can be concentrated on fewer SMs (e.g. a q/k head per block pair in the
 * persistent kernel's phase A) without slowing the stream. T = 0: the barrier alone.
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o build/burst_probe bench/burst_probe.cu
 *   build/burst_probe            (one line per total and block count)              */
#include "probe_common.cuh"

#define SMEM (WARPS * 9728)
__global__ void __launch_bounds__(WARPS * 32, 1) probe(const uint8_t *buf, size_t span, int nact, int per_block, int bursts, unsigned *bar, unsigned long long *sink) {
    extern __shared__ __align__(128) uint8_t sm[];
    unsigned acc = 0, nb = 0;
    /* active blocks spread over the grid: every (grid/nact)-th */
    const int stride = gridDim.x / nact;
    const bool act = blockIdx.x % stride == 0 && blockIdx.x / stride < nact;
    const int ab = blockIdx.x / stride;
    for (int b = 0; b < bursts; b++) {
        if (act) {
            const size_t base = ((size_t)mix(b * 7919u + 17u) * 4096 % (span - (size_t)nact * per_block)) & ~(size_t)4095;
            const uint8_t *src = buf + base + (size_t)ab * per_block;
            for (int k = threadIdx.x; k < per_block / 16; k += blockDim.x) {
                const unsigned sa = (unsigned)__cvta_generic_to_shared(sm + (16 * k) % SMEM);
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sa), "l"(src + 16 * k) : "memory");
            }
            asm volatile("cp.async.commit_group;" ::: "memory");
            asm volatile("cp.async.wait_all;" ::: "memory");
            __syncthreads();
            acc += sm[threadIdx.x * 4];
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
    CU(cudaFuncSetAttribute(probe, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
    printf("%8s %6s %9s %10s %8s %10s\n", "total_KB", "nact", "KB/block", "us/burst", "GB/s", "GB/s/SM");
    for (int total_kb : {0, 6000, 4700, 14000})
        for (int nact : {1, 11, 22, 33, 44, 66, 132}) {
            if (total_kb == 0 && nact > 1) continue;
            int per_block = (int)((size_t)total_kb * 1024 / nact / 16 * 16);
            if (per_block > 4 * SMEM) continue;
            int nb = 0;
            void *args[] = {(void *)&buf, (void *)&span, (void *)&nact, (void *)&per_block, (void *)&nb, (void *)&bar, (void *)&sink};
            double us = 0;
            if (probe_time((const void *)probe, nsm, SMEM, args, &nb, 400, bar, &us)) return 1;
            const double bytes = (double)nact * per_block;
            printf("%8d %6d %9d %10.2f %8.0f %10.1f\n", total_kb, nact, per_block / 1024, us, bytes / (us * 1e-6) / 1e9, bytes / nact / (us * 1e-6) / 1e9);
        }
    return 0;
}
