# tests/gpu/gpu.mk — GPU-side binaries and `make test-gpu` (included by the top Makefile).
# Binaries under build/gpu/ are built for a generic x86-64-v3 host with PCRE2 and
# utf8proc linked statically, so they run on a machine that has the CUDA driver
# and cuBLAS but not those libraries. Build them here, run them on the GPU machine:
#   make gpu-bins          (needs nvcc; no GPU needed)
#   make test-gpu          (kernel tests, --parity on synthetic models, sanitizers)
GPU_BUILD  := $(BUILD)/gpu
GPU_MARCH  ?= -march=x86-64-v3
GPU_CFLAGS := -O3 $(GPU_MARCH) -g -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-array-bounds -Wno-unused-function
GPU_STATIC := -Wl,-Bstatic -lpcre2-8 -lutf8proc -Wl,-Bdynamic
GPU_CUDALIBS = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart_static -ldl -lrt -lstdc++

ifneq ($(NVCC),)
$(GPU_BUILD):
	mkdir -p $@

$(GPU_BUILD)/qwen3moe: qwen3moe.c qwen3moe.h gguf.h $(BUILD)/qwen3moe_cuda.o | $(GPU_BUILD)
	$(CC) $(GPU_CFLAGS) -o $@ qwen3moe.c $(BUILD)/qwen3moe_cuda.o $(GPU_STATIC) -lm -lpthread $(GPU_CUDALIBS)

$(GPU_BUILD)/gen_model: tests/gen_model.c tests/randquant.h gguf.h | $(GPU_BUILD)
	$(CC) $(GPU_CFLAGS) -I. -o $@ tests/gen_model.c -lm -lpthread

$(GPU_BUILD)/test_kernels: tests/gpu/test_kernels.cu qwen3moe_cuda.cu qwen3moe.h gguf.h tests/randquant.h | $(GPU_BUILD)
	$(NVCC) $(NVFLAGS) -I. -o $@ tests/gpu/test_kernels.cu -Xlinker -rpath -Xlinker $(CUDA_HOME)/lib64 -lcublas

gpu-bins: $(GPU_BUILD)/qwen3moe $(GPU_BUILD)/gen_model $(GPU_BUILD)/test_kernels

test-gpu: gpu-bins
	tests/gpu/run.sh
else
gpu-bins test-gpu:
	@echo "nvcc not found: the GPU tests need the CUDA toolkit" >&2; exit 1
endif

.PHONY: gpu-bins test-gpu
