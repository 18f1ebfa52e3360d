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
