/* bench/probe_common.cuh — what the memory probes (stream_probe.cu, burst_probe.cu) share:
 * the error check, a hash for picking regions, and the persistent kernel's grid barrier
 * (atomic arrive, thread 0 spins on an acquire load). */
#pragma once
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>

#define CU(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s: %s line %d\n", #x, cudaGetErrorString(e_), __LINE__); return 1; } } while (0)
#define WARPS 16

__device__ __forceinline__ uint32_t mix(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}
__device__ __forceinline__ void grid_bar(unsigned *bar, unsigned target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("fence.acq_rel.gpu;" ::: "memory");
        atomicAdd(bar, 1u);
        unsigned v;
        do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(bar) : "memory");
        while (v < target);
    }
    __syncthreads();
}
/* the grid (an SM each) and the bursts' source (a 12 GB span of filled memory, so that a
 * burst's place is random within far more than the L2), the barrier's counter and a sink
 * for the kernels' results */
static inline int probe_setup(size_t span, int *nsm, uint8_t **buf, unsigned **bar, unsigned long long **sink) {
    CU(cudaDeviceGetAttribute(nsm, cudaDevAttrMultiProcessorCount, 0));
    CU(cudaMalloc(buf, span)); CU(cudaMemset(*buf, 1, span)); CU(cudaMalloc(bar, 4)); CU(cudaMalloc(sink, 8));
    return 0;
}
