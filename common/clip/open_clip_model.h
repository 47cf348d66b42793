/* open_clip_model: the tensor names of an OpenCLIP checkpoint
 * (open_clip_config.json + open_clip_model.safetensors, clip/checkpoint.h)
 * bound into the project's tower types (clip_model.h), so that everything
 * downstream (embed, the parties, CoOp) runs unchanged on them.
 *
 *   ViT image tower -> VF_VISION_VIT: open_clip's fused attn.in_proj_weight
 *     (3C, C) = [q; k; v] is used as three (C, C) slices; visual.proj (C, D)
 *     is stored transposed relative to HF's visual_projection (D, C) and is
 *     transposed at load; ln_pre/ln_post, conv1 (no bias), class_embedding
 *     and positional_embedding map one to one.
 *   ModifiedResNet image tower -> VF_VISION_RESNET (open_clip_resnet.h).
 *   Text tower -> the HF text weights, text_projection (C, D) transposed;
 *     pooling at the argmax token as open_clip does (eos_token_id 2 selects
 *     that rule in cpu/clip_text.h).
 * F32 tensors are used in place from the mapping when aligned; F16/BF16 are
 * converted into the tower's parameter arena.  A missing tensor or a shape
 * the config does not expect fails naming the file and the tensor. */
#ifndef VF_OPEN_CLIP_MODEL_H
#define VF_OPEN_CLIP_MODEL_H

#include "clip/weight_binder.h"
#include "util/vf_error.h"

#define VF_OPEN_CLIP_WEIGHTS "open_clip_model.safetensors"

/* weight_binder.h bind functions (vf_bind_all) for the OpenCLIP layout:
 * weights is a vf_vit_weights (cfg and projection_dim set) for the ViT image
 * tower, a vf_clip_text_weights for the text tower.  The ModifiedResNet is
 * clip/open_clip_resnet.h's.  clip_model.c's loaders call them. */
int vf_open_clip_bind_vit(vf_binder *b, void *weights, vf_error *err);
int vf_open_clip_bind_text(vf_binder *b, void *weights, vf_error *err);

#endif
