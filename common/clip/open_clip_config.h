/* open_clip_config: the shape and preprocessing of an OpenCLIP checkpoint,
 * parsed from open_clip_config.json as published on the Hugging Face hub
 *   {"model_cfg": {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"},
 *    "preprocess_cfg": {"mean", "std", "interpolation", "resize_mode", ...}}
 * or from a bare model config (open_clip's model_configs/<name>.json, which is the
 * model_cfg alone; preprocessing then takes open_clip's PreprocessCfg defaults).
 *
 * Both families of the seed paper: vision_cfg.layers a list of four = the
 * ModifiedResNet, a number = the ViT.  Options open_clip has but OpenAI's
 * CLIP models do not use (timm/HF towers, layer scale, attentional pooling,
 * ...) are refused with an error naming the file and the key, never ignored. */
#ifndef VF_OPEN_CLIP_CONFIG_H
#define VF_OPEN_CLIP_CONFIG_H

#include "clip/clip_config.h"
#include "util/vf_error.h"

typedef struct vf_open_clip_config {
    int embed_dim;
    int quick_gelu;               /* model_cfg.quick_gelu (open_clip's default: false = erf GELU) */
    /* vision_cfg */
    int is_resnet;                /* layers given as [l1, l2, l3, l4] */
    int resnet_layers[4];
    int vision_layers;            /* ViT depth */
    int vision_width;             /* ViT width, or the ResNet stem width */
    int vision_head_width;        /* 64 */
    float vision_mlp_ratio;       /* 4.0 */
    int patch_size;               /* ViT only */
    int image_size;
    /* text_cfg */
    int context_length, vocab_size, text_width, text_heads, text_layers;
    float text_mlp_ratio;
    /* preprocess_cfg */
    double mean[3], std[3];
    char interpolation[16];       /* bicubic */
    char resize_mode[16];         /* shortest */
    int random_weights;           /* top-level "vflclip_random_weights": true (make-model) */
} vf_open_clip_config;

/* Parses the text of open_clip_config.json (or a bare model config); `name`
 * (the path) goes into error messages. */
int vf_open_clip_config_parse(const char *json, const char *name, vf_open_clip_config *cfg, vf_error *err);
/* Reads DIR/open_clip_config.json (or the path to the file itself). */
int vf_open_clip_config_load(const char *path, vf_open_clip_config *cfg, vf_error *err);
/* Presets with the shapes of the paper's backbones: rn50x4, rn50x16, rn50x64,
 * vit-b-32, vit-b-16, vit-l-14, vit-l-14-336 (OpenAI weights: quick_gelu). */
int vf_open_clip_config_preset(const char *like, vf_open_clip_config *cfg, vf_error *err);
/* Positive sizes, heads dividing widths, image size a multiple of 32 (ResNet)
 * or of the patch (ViT). */
int vf_open_clip_config_validate(const vf_open_clip_config *cfg, const char *name, vf_error *err);
/* open_clip_config.json as the hub has it (model_cfg + preprocess_cfg); malloc'd. */
char *vf_open_clip_config_to_json(const vf_open_clip_config *cfg);

/* The text tower (and, for a ViT, the vision tower) as the project's CLIP
 * config: layer-norm eps 1e-5, MLP width = ratio * width, quick_gelu or GELU,
 * EOT id 49407 (open_clip pools at the argmax token, which is the EOT). */
void vf_open_clip_to_clip_config(const vf_open_clip_config *oc, vf_clip_config *cfg);

/* open_clip's image transform for the checkpoint as the project's
 * preprocessing: bicubic resize of the shortest side to image_size, centre
 * crop to image_size (offset rounded as torchvision's CenterCrop), x/255,
 * (x - mean) / std with preprocess_cfg's mean/std. */
struct vf_preprocess_cfg;
void vf_open_clip_preprocess(const vf_open_clip_config *oc, struct vf_preprocess_cfg *cfg);

/* 1 when DIR holds open_clip_config.json (an OpenCLIP checkpoint directory).
 * clip/checkpoint.c asks it once per directory opened; code with an open
 * checkpoint reads its layout instead. */
int vf_open_clip_is_dir(const char *dir);

#endif
