/* bench/contention_probe.cu — what does a weight stream cost the latency-bound loads beside
 * it? One SM (block 0, lane 0 of warp 0) walks a chain of dependent L2-resident loads (and
 * then of returning atomics, as a grid barrier's arrive) while other blocks stream DRAM
 * bytes into shared memory: 16-byte cp.async (as the persistent kernel's rows) or TMA bulk
 * copies (cp.async.bulk, completion on an mbarrier), from the other SMs only, from block 0's
 * own other warps only, or both; marked L2 evict_first as the kernel's rows are. Decides whether the barrier windows' copies, issued
 * another way, would stop slowing the norm's x loads and the barrier's polls.
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o build/contention_probe bench/contention_probe.cu
 *   build/contention_probe       (one line per mode: ns a hop, ns an atomic, stream TB/s) */
#include "probe_common.cuh"
#include <vector>
#include <algorithm>
#include <random>

#define WB 12288              /* staging bytes per warp */
#define SMEM (WARPS * WB)
#define CHAIN_N 65536         /* chain slots (4-byte indices, one per 128-byte line: 8 MB, L2-resident) */
#define HOPS 512

__device__ __forceinline__ unsigned long long gt() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
/* mode bits: 1 others stream, 2 block 0's warps 1..15 stream, 4 TMA instead of cp.async, 8 only every 4th other block streams.
 * nw: streaming warps per SM (the first nw), chunk: bytes a warp has in flight at once (<= WB) */
__global__ void __launch_bounds__(WARPS * 32, 1) probe(const uint8_t *buf, size_t span, const unsigned *chain, unsigned *atom, int mode, int nw, int chunk,
                                                       volatile int *done, unsigned long long *out, unsigned long long *bytes) {
    extern __shared__ __align__(128) uint8_t sm[];
    __shared__ __align__(8) unsigned long long mbar[WARPS];
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const bool streamer = w >= nw + (blockIdx.x == 0) ? false : blockIdx.x == 0 ? (w > 0 && (mode & 2)) : ((mode & 1) && (!(mode & 8) || blockIdx.x % 4 == 0));
    const bool tma = mode & 4;
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        /* warm the chain into L2 (and let the streams reach a steady state) */
        unsigned i = 0;   /* every pass walks the same HOPS lines from slot 0 */
        for (int k = 0; k < HOPS; k++) i = __ldcg(chain + 32 * i);
        const unsigned long long t0 = gt();
        while (gt() - t0 < 30000) {}
        i &= CHAIN_N;   /* 0, known to the compiler only at run time */
        for (int k = 0; k < HOPS; k++) i = __ldcg(chain + 32 * i);   /* the same lines again: the streams may have evicted them */
        const unsigned first = i & CHAIN_N;
        i = first;
        unsigned long long a = gt();
        for (int k = 0; k < HOPS; k++) i = __ldcg(chain + 32 * i);
        unsigned long long b = gt();
        unsigned v = i & 1;
        for (int k = 0; k < HOPS / 4; k++) v = atomicAdd(atom + (v & 1) * 32, 1u) & 1;
        unsigned long long c = gt();
        out[0] = b - a;
        out[1] = c - b;
        out[2] = i + v;
        __threadfence();
        *done = 1;
    }
    if (!streamer) return;
    uint8_t *dst = sm + w * WB;
    const unsigned sa = (unsigned)__cvta_generic_to_shared(dst), mb = (unsigned)__cvta_generic_to_shared(&mbar[w]);
    if (tma && lane == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(mb));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncwarp();
    const size_t gw = (size_t)w * gridDim.x + blockIdx.x, per = span / (WARPS * gridDim.x) & ~(size_t)4095;
    const uint8_t *src0 = buf + gw * per;
    size_t off = 0, moved = 0;
    unsigned phase = 0;
    uint64_t pol;   /* streamed bytes marked evict_first, as the persistent kernel's rows */
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    while (!*done) {
        const uint8_t *src = src0 + off;
        if (tma) {
            if (lane == 0) {
                asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mb), "r"(chunk) : "memory");
                for (int k = 0; k < chunk / 1024; k++)
                    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], 1024, [%2], %3;" ::"r"(sa + 1024 * k),
                                 "l"(src + 1024 * k), "r"(mb), "l"(pol)
                                 : "memory");
            }
            unsigned ok = 0;
            while (!ok)
                asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }" : "=r"(ok) : "r"(mb), "r"(phase) : "memory");
            phase ^= 1;
        } else {
            for (int k = lane; k < chunk / 16; k += 32)
                asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(sa + 16 * k), "l"(src + 16 * k), "l"(pol) : "memory");
            asm volatile("cp.async.wait_all;" ::: "memory");
        }
        __syncwarp();
        moved += chunk;
        off = off + chunk < per ? off + chunk : 0;
    }
    if (lane == 0) atomicAdd(bytes, (unsigned long long)moved);
}

int main() {
    int nsm = 0;
    CU(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, 0));
    const size_t span = (size_t)8 << 30;
    uint8_t *buf; unsigned *chain, *atom; int *done; unsigned long long *out, *bytes;
    CU(cudaMalloc(&buf, span)); CU(cudaMemset(buf, 1, span));
    CU(cudaMalloc(&chain, (size_t)CHAIN_N * 128)); CU(cudaMalloc(&atom, 256)); CU(cudaMalloc(&done, 4));
    CU(cudaMalloc(&out, 64)); CU(cudaMalloc(&bytes, 8));
    /* one random cycle over the slots */
    std::vector<unsigned> perm(CHAIN_N), host((size_t)CHAIN_N * 32, 0);
    for (unsigned i = 0; i < CHAIN_N; i++) perm[i] = i;
    std::shuffle(perm.begin() + 1, perm.end(), std::mt19937(7));
    for (unsigned i = 0; i < CHAIN_N; i++) host[(size_t)perm[i] * 32] = perm[(i + 1) % CHAIN_N];
    CU(cudaMemcpy(chain, host.data(), host.size() * 4, cudaMemcpyHostToDevice));
    CU(cudaFuncSetAttribute(probe, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
    static const struct { int mode, nw, chunk; const char *what; } modes[] = {
        {0, 16, WB, "quiet"},
        {1, 16, WB, "others, cp.async"},
        {9, 16, WB, "1/4 of others, cp.async"},
        {5, 16, WB, "others, TMA"},
        {2, 16, WB, "own SM, cp.async"},
        {6, 16, WB, "own SM, TMA"},
        {3, 16, WB, "all, cp.async"},
        {7, 16, WB, "all, TMA"},
        {1, 16, 8192, "others, cp.async"},
        {1, 16, 4096, "others, cp.async"},
        {1, 16, 2048, "others, cp.async"},
        {1, 16, 1024, "others, cp.async"},
        {1, 8, 4096, "others, cp.async"},
        {1, 8, 2048, "others, cp.async"},
        {1, 4, 4096, "others, cp.async"},
        {1, 4, 2048, "others, cp.async"},
        {1, 2, 4096, "others, cp.async"},
        {1, 2, 2048, "others, cp.async"},
        {5, 4, 4096, "others, TMA"},
        {5, 2, 4096, "others, TMA"},
    };
    printf("%-24s %4s %6s %8s %10s %10s %10s\n", "who streams, how", "nw", "chunk", "MB fly", "ns/L2 hop", "ns/atomic", "TB/s");
    for (int rep = 0; rep < 2; rep++)
        for (const auto &m : modes) {
            CU(cudaMemset(done, 0, 4)); CU(cudaMemset(bytes, 0, 8)); CU(cudaMemset(atom, 0, 256));
            cudaEvent_t e0, e1;
            CU(cudaEventCreate(&e0)); CU(cudaEventCreate(&e1));
            CU(cudaEventRecord(e0));
            probe<<<nsm, WARPS * 32, SMEM>>>(buf, span, chain, atom, m.mode, m.nw, m.chunk, done, out, bytes);
            CU(cudaEventRecord(e1));
            CU(cudaDeviceSynchronize());
            float ms = 0;
            CU(cudaEventElapsedTime(&ms, e0, e1));
            unsigned long long o[3], by = 0;
            CU(cudaMemcpy(o, out, 24, cudaMemcpyDeviceToHost)); CU(cudaMemcpy(&by, bytes, 8, cudaMemcpyDeviceToHost));
            const int nsrc = m.mode == 0 ? 0 : (m.mode & 2 ? 1 : 0) + (m.mode & 1 ? (m.mode & 8 ? (nsm - 1) / 4 : nsm - 1) : 0);
            printf("%-24s %4d %6d %8.1f %10.1f %10.1f %10.2f\n", m.what, m.nw, m.chunk, (double)nsrc * m.nw * m.chunk / 1e6, (double)o[0] / HOPS, (double)o[1] / (HOPS / 4),
                   by / (ms * 1e-3) / 1e12);
        }
    return 0;
}
