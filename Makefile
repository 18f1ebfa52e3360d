# qwen3moe — `make` builds the runner (CPU + GPU when nvcc is found, CPU-only otherwise),
# `make test` builds everything and runs every test, ending with "N passed, N failed".
CC      ?= cc
MARCH   ?= -march=native
CFLAGS  ?= -O3 $(MARCH) -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Wno-unused-parameter
# gcc 12 reports stb_ds growing a char array as out of bounds (a false positive)
CFLAGS  += -Wno-array-bounds
LDLIBS  += -lpcre2-8 -lutf8proc -lm -lpthread

NVCC    ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# sm_90 machine code for Hopper plus PTX that the driver can compile for other cards
NVFLAGS ?= -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90 \
           -Xcompiler -Wall -lineinfo
# NVEXTRA: more nvcc flags on top (bench/variant.sh: the kernel's -D switches, ptxas -v)
NVFLAGS += $(NVEXTRA)

BUILD   := build
TEST_SRCS := $(wildcard tests/*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/%,$(TEST_SRCS))

ifeq ($(NVCC),)
all: cpu-only-note qwen3moe $(TEST_BINS)
cpu-only-note:
	@echo "note: nvcc not found: building the CPU-only runner (the GPU path is compiled out)" >&2
qwen3moe: qwen3moe.c qwen3moe.h gguf.h
	$(CC) $(CFLAGS) -DQWEN3MOE_NO_CUDA -o $@ qwen3moe.c $(LDLIBS)
else
all: qwen3moe $(TEST_BINS)
$(BUILD)/qwen3moe_cuda.o: qwen3moe_cuda.cu qwen3moe.h gguf.h | $(BUILD)
	$(NVCC) $(NVFLAGS) -c -o $@ qwen3moe_cuda.cu
qwen3moe: qwen3moe.c qwen3moe.h gguf.h $(BUILD)/qwen3moe_cuda.o
	$(CC) $(CFLAGS) -o $@ qwen3moe.c $(BUILD)/qwen3moe_cuda.o $(LDLIBS) \
	    -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart_static -ldl -lrt -lstdc++
endif

$(BUILD):
	mkdir -p $@

$(BUILD)/test_dequant $(BUILD)/gen_model: tests/randquant.h

$(BUILD)/%: tests/%.c gguf.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

# AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU runner, for make test
$(BUILD)/asan/qwen3moe: qwen3moe.c qwen3moe.h gguf.h
	mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	    -fno-sanitize-recover=undefined -DQWEN3MOE_NO_CUDA -o $@ qwen3moe.c $(LDLIBS)

# Node packages the oracle tests use (pinned in tests/package-lock.json)
tests/node_modules: tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The embedded default model: small, random weights, real architecture, Q4_K_M mix
$(BUILD)/models/default.gguf: $(BUILD)/gen_model
	mkdir -p $(dir $@)
	$(BUILD)/gen_model -o $@ --preset tiny --mix q4_k_m --seed 42 -q

run: qwen3moe $(BUILD)/models/default.gguf
	./qwen3moe -m $(BUILD)/models/default.gguf -p "Write a haiku about GPUs" -n 48 -s 1

test: all $(BUILD)/asan/qwen3moe tests/node_modules
	tests/run.sh

clean:
	rm -rf $(BUILD) qwen3moe

.PHONY: all test run clean cpu-only-note

# GPU tests (kernel tests, parity runs, compute-sanitizer): run on the device machine
-include tests/gpu/gpu.mk

# libFuzzer harnesses (clang): make fuzz
-include fuzz/fuzz.mk
