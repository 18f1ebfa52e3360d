#!/usr/bin/env bash
# Prints the path of llama.cpp's gguf-py (the Python package with the reference
# GGUF reader/writer and NumPy dequantization), extracting it on first use from
# the llama.cpp source bundle that the node-llama-cpp npm package ships. Only
# gguf-py/ is kept, under build/ (gitignored); nothing from llama.cpp is committed.
# Exit 1 (with the reason on stderr) when the bundle or git is missing.
cd "$(dirname "$0")/.." || exit 1
bundle=tests/node_modules/node-llama-cpp/llama/gitRelease.bundle
dst=build/llama.cpp
if [ ! -f "$dst/gguf-py/gguf/quants.py" ]; then
    [ -f "$bundle" ] || { echo "no llama.cpp bundle at $bundle (run: make tests/node_modules)" >&2; exit 1; }
    command -v git >/dev/null || { echo "git not found" >&2; exit 1; }
    tmp=$(mktemp -d build/llama.cpp.XXXXXX) || exit 1
    if git clone -q --no-checkout "$bundle" "$tmp/src" 2>/dev/null &&
       git -C "$tmp/src" checkout -q HEAD -- gguf-py 2>/dev/null; then
        git -C "$tmp/src" rev-parse HEAD > "$tmp/src/COMMIT"
        rm -rf "$tmp/src/.git" "$dst"
        mv "$tmp/src" "$dst"
        rm -rf "$tmp"
    else
        rm -rf "$tmp"; echo "cannot extract gguf-py from $bundle" >&2; exit 1
    fi
fi
echo "$dst/gguf-py"
