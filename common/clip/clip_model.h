/* clip_model: CLIP towers taken from an open checkpoint (clip/checkpoint.h:
 * Hugging Face tensor names as transformers' CLIPModel writes them, or
 * OpenCLIP's, clip/open_clip_model.h) and the vision tower's single entry
 * point.
 *
 * Each party loads only the tower it needs.  F32 tensors are used in place
 * from the read-only mapping when 4-byte aligned; F16/BF16/F64 (and
 * misaligned F32) are converted into the tower's one parameter arena.  Every
 * tensor's shape is checked against the config; a missing tensor or wrong
 * shape fails naming the file and the tensor.  A tower borrows the
 * checkpoint's mapping: the checkpoint must stay open until the tower is
 * freed.
 *
 * The fingerprint (the checkpoint's: SHA-256 over the canonical config, the
 * tensor table and a sample of every tensor's bytes) is the same for both
 * towers of one checkpoint, so parties can check they share a model without
 * sending weights. */
#ifndef VF_CLIP_MODEL_H
#define VF_CLIP_MODEL_H

#include "clip/checkpoint.h"
#include "clip/clip_config.h"
#include "cpu/clip_text.h"
#include "cpu/clip_vit.h"
#include "cpu/resnet.h"  /* open_clip ModifiedResNet (issue 5) */
#include "formats/safetensors.h"
#include "util/arena.h"
#include "util/vf_error.h"

/* ---- text tower ---------------------------------------------------------- */
typedef struct vf_clip_text_tower {
    vf_clip_config cfg;
    vf_clip_text_weights w;   /* pass &tower.w to the cpu/clip_text.h forward */
    float logit_scale;        /* logit_scale tensor (log of the temperature s) */
    unsigned char fingerprint[VF_FINGERPRINT_LEN];
    const vf_safetensors *st;  /* the checkpoint's tensor file */
    vf_arena params;
    vf_checkpoint *own;        /* the checkpoint vf_clip_text_load opened for it (NULL: borrowed) */
} vf_clip_text_tower;

/* The text tower of ck (opened with its weights); ck outlives t. */
int vf_clip_text_load_from(vf_clip_text_tower *t, const vf_checkpoint *ck, vf_error *err);
/* Opens model_dir's checkpoint for this tower alone (the tower owns it). */
int vf_clip_text_load(vf_clip_text_tower *t, const char *model_dir, vf_error *err);
void vf_clip_text_free(vf_clip_text_tower *t);

/* ---- vision tower: a small tagged type, one entry point ------------------ */
typedef enum vf_vision_kind {
    VF_VISION_VIT = 1,  /* CLIPVisionTransformer */
    VF_VISION_RESNET = 2, /* open_clip ModifiedResNet: clip/open_clip_model.h (issue 5) */
} vf_vision_kind;

typedef struct vf_vision_tower {
    vf_vision_kind kind;
    int image_size;       /* input is (B, 3, image_size, image_size), preprocessed */
    int embed_dim;        /* D of the output */
    int max_batch;        /* activations are sized for this many images */
    int random_weights;   /* made by make-model: outputs are meaningless */
    unsigned char fingerprint[VF_FINGERPRINT_LEN];
    vf_clip_config cfg;
    const vf_safetensors *st; /* the checkpoint's tensor file */
    vf_checkpoint *own;       /* the checkpoint vf_vision_load opened for it (NULL: borrowed) */
    vf_arena params;
    int cpu_bf16;         /* 1: the CPU encodes with bf16 matmuls (vf_vision_set_cpu_bf16), 0: fp32 */
    void *params_bf16;    /* those bf16 weights, one block (NULL in fp32) */
    union {
        struct { vf_vit_weights w; vf_vit_acts acts; } vit;
        struct { vf_resnet net; vf_resnet_acts acts; } resnet;  /* issue 5 */
    } u;
} vf_vision_tower;

/* The vision tower of ck (opened with its weights) with activations for
 * max_batch images; ck outlives t. */
int vf_vision_load_from(vf_vision_tower *t, const vf_checkpoint *ck, int max_batch, vf_error *err);
/* Opens model_dir's checkpoint for this tower alone (the tower owns it). */
int vf_vision_load(vf_vision_tower *t, const char *model_dir, int max_batch, vf_error *err);
void vf_vision_free(vf_vision_tower *t);
/* out (B, D) projected, not normalised, from pixels (B, 3, H, W)
 * preprocessed; any B (processed in chunks of max_batch).  Non-finite pixels
 * are an error. */
int vf_vision_encode(vf_vision_tower *t, const float *pixels, int B, float *out, vf_error *err);
/* Switches t's CPU encoding between fp32 (on = 0: the reference, the state
 * after loading) and bf16 matrix products (on = 1: cpu/matmul_bf16.h; the
 * weights of every Linear layer and convolution are converted once into
 * params_bf16; layer norm, softmax, GELU, attention, residuals, the patch
 * embedding, ResNets' attention pool and the projection stay fp32).  on = 1
 * fails, naming why, where vf_cpu_bf16_available says no.  (clip/vision_bf16.c) */
int vf_vision_set_cpu_bf16(vf_vision_tower *t, int on, vf_error *err);

#endif
