// Forward-pass oracle: ./qwen3moe --dump-logits against llama.cpp (node-llama-cpp), teacher
// forced over the same token sequence.
//   node tests/oracle/forward_test.mjs BINARY THREADS CASE...
// where CASE is  name:type:model.gguf[:OPT,OPT...]  (type: f32 f16 bf16 q8_0 ... iq4_xs),
// OPT: decode (prefill half, greedy-decode the rest), n=N (positions, default 40),
// th=dense|routed (threshold class of a quantized file), ref=REF.gguf. With ref=, llama.cpp evaluates REF (the model dequantized to F32 by gguf-py)
// while ours evaluates the model itself, and the F32 thresholds apply.
// Set ORACLE_VERBOSE=1 for per-position numbers. Prints TAP lines.
//
// Numbers, per position (L = llama.cpp's log-softmax, O = our raw logits):
//   offset c   = mean(O - L)  (llama.cpp gives probabilities, so its logits are known up to
//                a per-position constant; c is that constant, fitted)
//   max|d|     = max |O - c - L| over the vocabulary, in logit units
//   rel        = max|d| / max |L - mean L|   (relative to the logit scale)
//   cosine     = cosine of the centered vectors (O - mean O) and (L - mean L)
//   top-1      = argmax O == argmax L; for quantized files only counted where llama.cpp's
//                own top-1/top-2 margin is above TIE (a near tie flips on rounding noise)
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { readGgufFileInfo } from "node-llama-cpp";
import { llamaLogprobs, readDump, rng, run, tap } from "./lib.mjs";

// Measured on this project's synthetic models (see tests/ORACLE.md); thresholds sit a bit
// below (cosines, agreement) / above (errors) the measurements.
//   relMax: max over positions of rel;  cosMin / cosMean: over positions;
//   top1: fraction of non-tie positions where the argmax agrees
// exact:  both sides compute the same f32 function (F32 files; or a quantized file against
//         llama.cpp on its gguf-py F32 dequantization)
// dense:  llama.cpp on the quantized file, every expert used (no routing choice)
// routed: llama.cpp on the quantized file, top-2 of 8 experts: its activation rounding
//         flips near-tie expert choices, which moves a few positions a lot
const T = (cosMin, cosMean, top1) => ({ cosMin, cosMean, top1 });
const R = (cosMedian, top1) => ({ cosMin: 0.5, cosMean: 0.98, cosMedian, top1 });
export const THRESHOLDS = {
    exact: { all: { relMax: 1e-5, cosMin: 0.9999999, cosMean: 0.9999999, top1: 1.0 } },
    dense: {
        f16: T(0.999999, 0.999999, 1), bf16: T(0.99995, 0.99998, 1),
        q8_0: T(0.9995, 0.9998, 0.95), q5_0: T(0.9995, 0.9998, 0.95), q5_1: T(0.9995, 0.9998, 0.95),
        q4_0: T(0.9995, 0.9998, 0.95), q4_1: T(0.9995, 0.9998, 0.95), iq4_nl: T(0.9995, 0.9998, 0.95),
        q6_k: T(0.998, 0.9995, 0.875), q5_k: T(0.998, 0.9995, 0.875), q4_k: T(0.997, 0.9995, 0.875),
        q3_k: T(0.998, 0.9995, 0.875), q2_k: T(0.998, 0.9995, 0.875), iq4_xs: T(0.997, 0.9993, 0.875),
    },
    routed: {
        f16: { cosMin: 0.999999, cosMean: 0.999999, top1: 1 }, bf16: { cosMin: 0.99995, cosMean: 0.99998, top1: 1 },
        q8_0: R(0.9995, 0.9), q5_0: R(0.9995, 0.9), q5_1: R(0.9995, 0.9), q4_0: R(0.9995, 0.9),
        q4_1: R(0.9995, 0.9), iq4_nl: R(0.9995, 0.9), q6_k: R(0.998, 0.9), q5_k: R(0.998, 0.9),
        q4_k: R(0.997, 0.9), q3_k: R(0.998, 0.9), q2_k: R(0.998, 0.9), iq4_xs: R(0.997, 0.9),
    },
};
const TIE = 0.05;         // logit units: llama.cpp top-1/top-2 margins below this are near ties
const EXACT_TIE = 1e-4;   // the same where both sides compute in f32 (the noise is ~1e-5)

const [bin, threadsArg, ...caseArgs] = process.argv.slice(2);
const threads = Number(threadsArg) || 1;
const verbose = !!process.env.ORACLE_VERBOSE;
const DEFAULT_NPOS = Number(process.env.ORACLE_NPOS || 40);

function sequenceFor(modelPath, nVocab, tokenTypes, seed, n) {
    const r = rng(seed);
    const ids = [];
    while (ids.length < n) {
        const id = Math.floor(r() * nVocab);
        if (!tokenTypes || tokenTypes[id] === 1) ids.push(id);   // NORMAL tokens only
    }
    return ids;
}

function stats(O, L) {
    const n = L.length;
    let sumD = 0, cnt = 0, sumO = 0, sumL = 0;
    for (let i = 0; i < n; i++) if (!Number.isNaN(L[i])) { sumD += O[i] - L[i]; sumO += O[i]; sumL += L[i]; cnt++; }
    const c = sumD / cnt, mO = sumO / cnt, mL = sumL / cnt;
    let maxd = 0, scale = 0, dot = 0, nO = 0, nL = 0, aO = 0, aL = 0;
    for (let i = 0; i < n; i++) {
        if (Number.isNaN(L[i])) continue;
        const d = Math.abs(O[i] - c - L[i]);
        if (d > maxd) maxd = d;
        const lo = O[i] - mO, ll = L[i] - mL;
        if (Math.abs(ll) > scale) scale = Math.abs(ll);
        dot += lo * ll; nO += lo * lo; nL += ll * ll;
        if (O[i] > O[aO]) aO = i;
        if (L[i] > L[aL] || Number.isNaN(L[aL])) aL = i;
    }
    let second = -Infinity;
    for (let i = 0; i < n; i++) if (i !== aL && !Number.isNaN(L[i]) && L[i] > second) second = L[i];
    let secondO = -Infinity;
    for (let i = 0; i < n; i++) if (i !== aO && O[i] > secondO) secondO = O[i];
    return { maxd, rel: maxd / scale, cos: dot / Math.sqrt(nO * nL), topO: aO, topL: aL,
             margin: L[aL] - second, marginO: O[aO] - secondO, invalid: n - cnt };
}

async function runCase(name, type, model, decode, refModel, th, NPOS) {
    const info = await readGgufFileInfo(model, { readTensorInfo: false });
    const tokenTypes = info.metadata?.tokenizer?.ggml?.token_type;
    const nVocab = info.metadata?.tokenizer?.ggml?.tokens?.length;
    const seed = Number(process.env.ORACLE_SEED || 1234);   // the same sequence for every case of a vocabulary
    let ids = sequenceFor(model, nVocab, tokenTypes, seed, NPOS);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "q3fwd-"));
    const dump = path.join(tmp, "logits.bin");
    let nPrompt = ids.length, generated = [];
    if (decode) {
        // prefill half, then greedy decode: the dump holds the prompt rows, then one row per
        // decoded token; llama.cpp is teacher-forced on prompt + our generated tokens
        ids = ids.slice(0, NPOS >> 1);
        nPrompt = ids.length;
        const r = run(bin, ["-m", model, "--cpu", "-t", String(threads), "--prompt-ids", ids.join(","),
            "-n", String(NPOS - nPrompt), "--temp", "0", "--json", "--dump-logits", dump]);
        if (r.rc !== 0) { tap.ok(false, `${name}: ./qwen3moe --dump-logits (decode) exit ${r.rc}`, r.stderr.trim().split("\n").slice(-3)); return; }
        const j = JSON.parse(r.stdout.trim().split("\n").pop());
        generated = j.generated_ids;
        ids = ids.concat(generated);
    } else {
        const r = run(bin, ["-m", model, "--cpu", "-t", String(threads), "--prompt-ids", ids.join(","), "-n", "0", "--dump-logits", dump]);
        if (r.rc !== 0) { tap.ok(false, `${name}: ./qwen3moe --dump-logits exit ${r.rc}`, r.stderr.trim().split("\n").slice(-3)); return; }
    }
    const ours = readDump(dump, nVocab);
    fs.rmSync(tmp, { recursive: true, force: true });
    const nRows = ours.length;
    if (nRows < nPrompt || nRows > ids.length) {
        tap.ok(false, `${name}: dump has ${nRows} rows for ${nPrompt} prompt + ${generated.length} generated tokens`);
        return;
    }
    const ref = await llamaLogprobs(refModel ?? model, ids.slice(0, nRows), threads);
    if (ref[0].length !== nVocab) { tap.ok(false, `${name}: llama.cpp vocabulary ${ref[0].length} != ${nVocab}`); return; }
    const S = ours.map((O, p) => stats(O, ref[p]));
    const cosMin = Math.min(...S.map((s) => s.cos)), cosMean = S.reduce((a, s) => a + s.cos, 0) / S.length;
    const sortedCos = S.map((s) => s.cos).sort((x, y) => x - y);
    const cosMedian = sortedCos[(sortedCos.length - 1) >> 1];
    const relMax = Math.max(...S.map((s) => s.rel)), maxdMax = Math.max(...S.map((s) => s.maxd));
    const exact = type === "f32" || !!refModel;
    const tie = exact ? EXACT_TIE : TIE;
    const counted = S.map((s, p) => ({ s, p })).filter(({ s }) => s.margin >= tie);
    const agree = counted.filter(({ s }) => s.topO === s.topL);
    const top1 = agree.length / Math.max(1, counted.length);
    const ties = S.length - counted.length;
    const summary = `cos min ${cosMin.toFixed(7)} median ${cosMedian.toFixed(7)} mean ${cosMean.toFixed(7)}, max|d| ${maxdMax.toExponential(2)} (rel ${relMax.toExponential(2)}), ` +
        `top-1 ${agree.length}/${counted.length}` + (ties ? ` (+${ties} near ties skipped)` : "");
    console.log(`# ${name} [${type}${refModel ? " vs llama.cpp on gguf-py's F32 dequantization" : ""}] ${S.length} positions${decode ? ` (${nPrompt} prefill + ${S.length - nPrompt} decode)` : ""}: ${summary}`);
    if (verbose) S.forEach((s, p) => console.log(`#   pos ${p} tok ${ids[p]}: cos ${s.cos.toFixed(8)} max|d| ${s.maxd.toExponential(2)} rel ${s.rel.toExponential(2)} top ${s.topO}/${s.topL} margin ${s.margin.toFixed(4)} invalid ${s.invalid}`));
    const badPos = (pred) => S.map((s, p) => ({ s, p })).filter(({ s }) => pred(s)).slice(0, 8)
        .map(({ s, p }) => `pos ${p} (token ${ids[p]}): cos ${s.cos.toFixed(7)} max|d| ${s.maxd.toExponential(2)} rel ${s.rel.toExponential(2)} argmax ours ${s.topO} llama ${s.topL} (llama margin ${s.margin.toFixed(4)}, ours ${s.marginO.toFixed(4)})`);
    if (th.relMax !== undefined)
        tap.ok(relMax <= th.relMax, `${name}: logits equal llama.cpp's, max rel error ${relMax.toExponential(2)} <= ${th.relMax}`, badPos((s) => s.rel > th.relMax));
    tap.ok(cosMin >= th.cosMin && cosMean >= th.cosMean,
        `${name}: cosine to llama.cpp min ${cosMin.toFixed(7)} >= ${th.cosMin}, mean ${cosMean.toFixed(7)} >= ${th.cosMean}`, badPos((s) => s.cos < th.cosMin));
    if (th.cosMedian !== undefined)
        tap.ok(cosMedian >= th.cosMedian, `${name}: median cosine to llama.cpp ${cosMedian.toFixed(7)} >= ${th.cosMedian}`);
    tap.ok(top1 >= th.top1, `${name}: top-1 agrees with llama.cpp at ${agree.length}/${counted.length} non-tie positions`,
        badPos((s) => s.topO !== s.topL && s.margin >= tie));
    if (decode) {
        // our greedy tokens must be llama.cpp's argmax at the previous position
        const bad = [];
        for (let k = 0; k < generated.length && nPrompt - 1 + k < S.length; k++) {
            const s = S[nPrompt - 1 + k];
            if (generated[k] !== s.topL && s.margin >= tie) bad.push(`decode step ${k}: ours ${generated[k]}, llama.cpp argmax ${s.topL} (margin ${s.margin.toFixed(4)})`);
        }
        tap.ok(bad.length === 0, `${name}: ${generated.length} greedy tokens are llama.cpp's argmax`, bad.slice(0, 8));
    }
    return { name, type, ref: !!refModel, n: S.length, cosMin, cosMedian, cosMean, relMax, maxdMax, agree: agree.length, counted: counted.length, ties };
}

const results = [];
for (const c of caseArgs) {
    const [name, type, model, optStr = ""] = c.split(":");
    const opts = Object.fromEntries(optStr.split(",").filter(Boolean).map((o) => [o.split("=")[0], o.includes("=") ? o.slice(o.indexOf("=") + 1) : true]));
    const cls = opts.ref || type === "f32" ? "exact" : (opts.th || "dense");
    if (!THRESHOLDS[cls]?.[cls === "exact" ? "all" : type]) { tap.ok(false, `${name}: no thresholds for ${cls} ${type}`); continue; }
    if (!fs.existsSync(model)) { tap.ok(false, `${name}: model ${model} missing`); continue; }
    try {
        const refModel = opts.ref;
        if (refModel && !fs.existsSync(refModel)) { tap.ok(false, `${name}: reference ${refModel} missing`); continue; }
        const th = THRESHOLDS[cls][cls === "exact" ? "all" : type];
        const r = await runCase(name, type, model, !!opts.decode, refModel, th, Number(opts.n || DEFAULT_NPOS));
        if (r) results.push(r);
    } catch (e) {
        tap.ok(false, `${name}: ${e.message}`);
    }
}
if (process.env.ORACLE_JSON) fs.writeFileSync(process.env.ORACLE_JSON, JSON.stringify(results, null, 1));
process.exit(tap.fail ? 1 : 0);
