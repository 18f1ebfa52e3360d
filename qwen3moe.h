/* qwen3moe.h — the seam between qwen3moe.c (host, CPU reference) and
 * qwen3moe_cuda.cu (GPU). Plain C structs that describe the model as it lies in
 * the mmap'd GGUF, and the few calls the .c makes into the .cu. */
#ifndef QWEN3MOE_H
#define QWEN3MOE_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Hyper-parameters, from the qwen3moe.* metadata keys. */
typedef struct {
    int n_layer;        /* qwen3moe.block_count */
    int n_embd;         /* qwen3moe.embedding_length */
    int n_head;         /* qwen3moe.attention.head_count */
    int n_head_kv;      /* qwen3moe.attention.head_count_kv */
    int head_dim;       /* qwen3moe.attention.key_length (NOT n_embd / n_head) */
    int n_expert;       /* qwen3moe.expert_count */
    int n_expert_used;  /* qwen3moe.expert_used_count */
    int n_ff_max;       /* max over layers of n_ff_exp */
    int n_vocab;        /* rows of token_embd */
    int n_ctx_train;    /* qwen3moe.context_length */
    float rms_eps;      /* qwen3moe.attention.layer_norm_rms_epsilon */
    float rope_theta;   /* qwen3moe.rope.freq_base */
    int tied_output;    /* 1 when output.weight is absent and token_embd is reused */
} Config;

/* One weight as it lies in the mapping. ne[] in ggml order: ne[0] is contiguous.
 * A row of ne[0] elements takes row_bytes; rows follow each other densely. */
typedef struct {
    const char *name;   /* GGUF tensor name, NUL-terminated */
    const void *data;   /* into the mmap */
    uint32_t type;      /* ggml type id (gguf.h GGML_TYPE_*) */
    int64_t ne[4];
    size_t row_bytes;
    size_t nbytes;
} Tensor;

typedef struct {
    Tensor attn_norm;                 /* [n_embd] */
    Tensor attn_q, attn_k, attn_v;    /* [n_embd, n_head*head_dim], [n_embd, n_head_kv*head_dim] */
    Tensor attn_q_norm, attn_k_norm;  /* [head_dim] */
    Tensor attn_output;               /* [n_head*head_dim, n_embd] */
    Tensor ffn_norm;                  /* [n_embd] */
    Tensor ffn_gate_inp;              /* router [n_embd, n_expert] */
    Tensor ffn_gate_exps, ffn_up_exps;/* [n_embd, n_ff, n_expert] */
    Tensor ffn_down_exps;             /* [n_ff, n_embd, n_expert] */
    int n_ff;                         /* this layer's expert FFN width */
} Layer;

typedef struct {
    Config cfg;
    Tensor token_embd;   /* [n_embd, n_vocab] */
    Tensor output_norm;  /* [n_embd] */
    Tensor output;       /* [n_embd, n_vocab]; a copy of token_embd when tied */
    Layer *layers;       /* n_layer */
} Weights;

/* ---- GPU path (qwen3moe_cuda.cu). Every call returns 0 on success, or -1 with
 * a message in err. Built as stubs that report "not compiled" when nvcc is absent. */
typedef struct GpuModel GpuModel;

typedef struct {
    char name[256];          /* the card, e.g. "NVIDIA H100 80GB HBM3" */
    size_t vram_total;       /* bytes */
    size_t vram_used_model;  /* bytes this model holds: weights + KV + scratch */
    char decode[128];        /* how a decode step runs, e.g. "persistent kernel, 132 blocks, Q4_K + Q6_K, attention chunked from position 256" */
    char prefill[128];       /* how prefill multiplies the experts, e.g. "expert GEMM on quantized weights" */
} GpuInfo;

/* Number of usable CUDA devices (0 without a driver or card); never fails. */
int gpu_device_count(void);
/* Upload every weight in its GGUF quant type, allocate the f16 KV cache for
 * n_ctx positions; refuses up front when free VRAM is short. progress != 0
 * draws a progress bar on stderr. */
GpuModel *gpu_load(const Weights *w, int n_ctx, int progress, char *err, size_t errlen);
void gpu_free(GpuModel *g);
int gpu_info(GpuModel *g, GpuInfo *info);
/* Evaluate n tokens at positions pos..pos+n-1, writing the KV cache.
 * logits: NULL, or n_vocab floats for the last position (all_logits=0), or
 * n*n_vocab floats, row per position (all_logits=1).
 * experts: NULL, or n*n_layer*n_expert_used ints: the expert ids each position
 * selected in each layer (order within a layer: descending routing weight).
 * expert_p: NULL, or as many floats: the router's probabilities of those ids
 * (softmax over all experts, before renormalization). */
int gpu_eval(GpuModel *g, const int *tokens, int n, int pos, float *logits,
             int all_logits, int *experts, float *expert_p, char *err, size_t errlen);
/* For the following gpu_eval calls of n tokens each (--parity): use these expert
 * ids (n*n_layer*n_expert_used, the caller keeps them alive) instead of the
 * router's choice, weighted by the router's own probabilities; gpu_eval's
 * experts still reports what the router chose. ids = NULL turns it off. */
int gpu_force_experts(GpuModel *g, const int *ids, int n, char *err, size_t errlen);
/* Greedy decode steps (CUDA graph replays; only the argmax id comes back), queued
 * without waiting, so that the GPU runs step t + 1 while the host reads step t's token:
 * gpu_decode_queue launches a step for token at pos, or, with token < 0, for the argmax
 * of the step queued before it at the next position (at most two unread);
 * gpu_decode_next waits for the oldest unread step and returns its argmax;
 * gpu_decode_drop waits for any unread steps and drops them (a generation that stopped
 * early; gpu_eval does it too). */
int gpu_decode_queue(GpuModel *g, int token, int pos, char *err, size_t errlen);
int gpu_decode_next(GpuModel *g, int *next, char *err, size_t errlen);
int gpu_decode_drop(GpuModel *g, char *err, size_t errlen);
/* Device-to-device copy bandwidth in bytes/s (read+write), measured now. */
double gpu_copy_bandwidth(GpuModel *g);

#ifdef __cplusplus
}
#endif
#endif
