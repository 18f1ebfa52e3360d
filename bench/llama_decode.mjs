// Decode speed of llama.cpp (node-llama-cpp's prebuilt CPU build) on a GGUF, for the
// side-by-side CPU comparison in bench/cpu_vs_llamacpp.sh.
//   node bench/llama_decode.mjs MODEL.gguf THREADS N_TOKENS
// Prints "llama.cpp decode tok/s: X" (greedy, from the first generated token on).
import { getLlama, LlamaLogLevel } from "../tests/node_modules/node-llama-cpp/dist/index.js";
const [modelPath, threads = "2", nTok = "32"] = process.argv.slice(2);
const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const ctx = await model.createContext({ contextSize: 512, threads: { ideal: +threads, min: +threads } });
const seq = ctx.getSequence();
const N = +nTok;
let n = 0, t0 = 0;
for await (const _ of seq.evaluate([1, 2, 3, 4], { temperature: 0 })) {
    if (n === 0) t0 = performance.now();
    if (++n >= N + 1) break;
}
if (n < N + 1) { console.error(`llama.cpp stopped after ${n} tokens`); process.exit(1); }
console.log(`llama.cpp decode tok/s: ${(N / ((performance.now() - t0) / 1000)).toFixed(3)}`);
process.exit(0);
