/* bench/launch_overhead.cu — per-kernel cost on this machine: N empty / tiny kernels
 * back to back in a stream and in a CUDA graph (µs per kernel), to separate launch
 * overhead from kernel work. */
#include <cstdio>
#include <cuda_runtime.h>
__global__ void k_empty(int *p) { if (p && threadIdx.x == 1234567) *p = 1; }
__global__ void k_small(float *x) { x[threadIdx.x] = x[threadIdx.x] * 1.0001f + 1.f; }
__global__ void k_spin(long long cyc) { long long t0 = clock64(); while (clock64() - t0 < cyc) {} }
int main() {
    const int N = 500;
    float *x; cudaMalloc(&x, 4096);
    cudaStream_t s; cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    for (int kind = 0; kind < 2; kind++) {
        for (int rep = 0; rep < 2; rep++) {
            cudaEventRecord(a, s);
            for (int i = 0; i < N; i++) { if (kind == 0) k_empty<<<1, 32, 0, s>>>(nullptr); else k_small<<<132, 256, 0, s>>>(x); }
            cudaEventRecord(b, s); cudaEventSynchronize(b);
            float ms; cudaEventElapsedTime(&ms, a, b);
            if (rep) printf("stream: %d %s kernels: %.2f us each\n", N, kind ? "small (132 blocks)" : "empty", ms * 1000 / N);
        }
        cudaGraph_t g; cudaGraphExec_t ge;
        cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
        for (int i = 0; i < N; i++) { if (kind == 0) k_empty<<<1, 32, 0, s>>>(nullptr); else k_small<<<132, 256, 0, s>>>(x); }
        cudaStreamEndCapture(s, &g); cudaGraphInstantiate(&ge, g, 0);
        for (int rep = 0; rep < 3; rep++) {
            cudaEventRecord(a, s); cudaGraphLaunch(ge, s); cudaEventRecord(b, s); cudaEventSynchronize(b);
            float ms; cudaEventElapsedTime(&ms, a, b);
            if (rep) printf("graph:  %d %s kernels: %.2f us each\n", N, kind ? "small (132 blocks)" : "empty", ms * 1000 / N);
        }
    }
    /* clock rate: spin 1e6 cycles */
    cudaEventRecord(a, s); k_spin<<<1, 32, 0, s>>>(2000000); cudaEventRecord(b, s); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b);
    printf("2e6-cycle spin: %.3f ms -> SM clock about %.0f MHz\n", ms, 2e6 / (ms * 1e3));
    for (int i = 0; i < 200; i++) k_spin<<<132, 32, 0, s>>>(200000);
    cudaEventRecord(a, s); k_spin<<<1, 32, 0, s>>>(2000000); cudaEventRecord(b, s); cudaEventSynchronize(b);
    cudaEventElapsedTime(&ms, a, b);
    printf("after 200 busy kernels, 2e6-cycle spin: %.3f ms -> SM clock about %.0f MHz\n", ms, 2e6 / (ms * 1e3));
    printf("%s\n", cudaGetErrorString(cudaGetLastError()));
    return 0;
}
