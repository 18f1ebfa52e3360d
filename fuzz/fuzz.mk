# libFuzzer harnesses (included by the top Makefile).
#   make fuzz                      build, seed, run each harness for FUZZ_SECONDS (default 60)
#   make fuzz FUZZ_SECONDS=600     longer
#   make fuzz FUZZ_RUNS=100000     a fixed number of executions per harness instead
#   make fuzz-build                just build build/fuzz/fuzz_{model,tokenizer,text}
#   make fuzz-corpus               just (re)generate the seed corpora (build/fuzz-corpus)
#   make fuzz-regress              replay tests/regress/TARGET/* through each harness once
# Needs clang with libFuzzer (Debian: clang libclang-rt-14-dev). Crash inputs go
# to build/fuzz-artifacts/TARGET/; turn each into a file under tests/regress/.
FUZZ_CC       ?= clang
FUZZ_SECONDS  ?= 60
FUZZ_RUNS     ?= -1
FUZZ_TARGETS  := model tokenizer text
FUZZ_CFLAGS   ?= -std=gnu11 -g -O1 -fno-omit-frame-pointer
FUZZ_SAN      := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                 -fsanitize-ignorelist=fuzz/ubsan.ignore
FUZZ_BINS     := $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h fuzz/ubsan.ignore qwen3moe.c qwen3moe.h gguf.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -Wall -Wno-unused-parameter -Wno-unused-function -I. -o $@ $< $(LDLIBS)

fuzz-build: $(FUZZ_BINS)

$(BUILD)/fuzz-corpus/.stamp: fuzz/make_corpus.sh $(BUILD)/gen_model
	bash fuzz/make_corpus.sh
	@touch $@

fuzz-corpus: $(BUILD)/fuzz-corpus/.stamp

# one harness after another, each on one core
fuzz: fuzz-build fuzz-corpus
	@fail=0; for t in $(FUZZ_TARGETS); do bash fuzz/run.sh $$t $(FUZZ_SECONDS) $(FUZZ_RUNS) || fail=1; done; \
	 [ $$fail -eq 0 ] || { echo "fuzz: crashes found: see build/fuzz-artifacts/" >&2; exit 1; }

# crash inputs kept as regression tests (no .gguf suffix: .gitignore drops *.gguf);
# tests/t_bad_model.sh also replays them through the CLI
fuzz-regress: fuzz-build fuzz-corpus
	@for t in $(FUZZ_TARGETS); do \
	    files=$$(ls tests/regress/$$t/* 2>/dev/null); [ -n "$$files" ] || continue; \
	    ASAN_OPTIONS=detect_leaks=0 $(BUILD)/fuzz/fuzz_$$t -runs=1 $$files || exit 1; \
	done; echo "fuzz-regress: ok"

.PHONY: fuzz fuzz-build fuzz-corpus fuzz-regress
