/* bench/probe_common.cuh — what the memory probes (stream_probe.cu, burst_probe.cu,
 * window_probe.cu, phase_probe.cu) share: the error check, a hash for picking regions, the
 * persistent kernel's grid barrier (atomic arrive, thread 0 spins on an acquire load; split
 * where a probe asks for copies in its window), its evict_first 16-byte copy, the setup and
 * the timing of a cooperative launch. */
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
__device__ __forceinline__ void grid_arrive(unsigned *bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("fence.acq_rel.gpu;" ::: "memory");
        atomicAdd(bar, 1u);
    }
}
__device__ __forceinline__ void grid_wait(const unsigned *bar, unsigned target) {
    if (threadIdx.x == 0) {
        unsigned v;
        do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(bar) : "memory");
        while (v < target);
    }
    __syncthreads();
}
__device__ __forceinline__ void grid_bar(unsigned *bar, unsigned target) {
    grid_arrive(bar);
    grid_wait(bar, target);
}
/* the persistent kernel's weight-row copy: 16 bytes, the line marked to leave L2 first */
__device__ __forceinline__ uint64_t l2_evict_first() {
    uint64_t pol;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    return pol;
}
__device__ __forceinline__ void cp16_hint(void *s, const void *g, uint64_t pol) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"((uint32_t)__cvta_generic_to_shared(s)), "l"(g), "l"(pol) : "memory");
}
/* the grid (an SM each) and the bursts' source (a 12 GB span of filled memory, so that a
 * burst's place is random within far more than the L2), the barrier's counter and a sink
 * for the kernels' results */
static inline int probe_setup(size_t span, int *nsm, uint8_t **buf, unsigned **bar, unsigned long long **sink) {
    CU(cudaDeviceGetAttribute(nsm, cudaDevAttrMultiProcessorCount, 0));
    CU(cudaMalloc(buf, span)); CU(cudaMemset(*buf, 1, span)); CU(cudaMalloc(bar, 4)); CU(cudaMalloc(sink, 8));
    return 0;
}
/* us per step of kernel k (one block an SM) over reps steps, after 20 to warm up; *n is the
 * step count its arguments point at, bar its barrier's counter (zeroed before each launch) */
static inline int probe_time(const void *k, int nsm, int smem, void **args, int *n, int reps, unsigned *bar, double *us) {
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0)); CU(cudaEventCreate(&e1));
    *n = 20;
    CU(cudaMemset(bar, 0, 4));
    CU(cudaLaunchCooperativeKernel(k, nsm, WARPS * 32, args, smem, 0));
    CU(cudaDeviceSynchronize());
    *n = reps;
    CU(cudaMemset(bar, 0, 4));
    CU(cudaEventRecord(e0));
    CU(cudaLaunchCooperativeKernel(k, nsm, WARPS * 32, args, smem, 0));
    CU(cudaEventRecord(e1)); CU(cudaEventSynchronize(e1));
    float ms = 0;
    CU(cudaEventElapsedTime(&ms, e0, e1));
    CU(cudaEventDestroy(e0)); CU(cudaEventDestroy(e1));
    *us = ms * 1e3 / reps;
    return 0;
}
