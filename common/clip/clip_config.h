/* clip_config: the shape of a CLIP model, parsed from a Hugging Face
 * config.json (CLIPModel layout, any transformers version from the 4.12 era
 * through 5.x) or taken from a named preset (--like tiny|vit-b-32|...).
 *
 * Missing keys take CLIPTextConfig / CLIPVisionConfig defaults, exactly as
 * transformers does; the 4.12-era "text_config_dict"/"vision_config_dict"
 * override the plain sub-configs as they do there.  Every number is checked
 * (positive, heads divide width, patch divides image) with an error naming
 * the file and the key. */
#ifndef VF_CLIP_CONFIG_H
#define VF_CLIP_CONFIG_H

#include "util/vf_error.h"

typedef enum vf_activation {
    VF_ACT_QUICK_GELU = 0, /* x * sigmoid(1.702 x), OpenAI CLIP */
    VF_ACT_GELU,           /* exact erf GELU */
    VF_ACT_GELU_TANH,      /* tanh approximation ("gelu_new", "gelu_pytorch_tanh") */
} vf_activation;

/* One transformer stack (vision or text). */
typedef struct vf_clip_encoder_config {
    int hidden_size;       /* C */
    int intermediate_size; /* F, MLP width */
    int num_layers;        /* L */
    int num_heads;         /* NH; head size C / NH */
    vf_activation act;
    float layer_norm_eps;
} vf_clip_encoder_config;

typedef struct vf_clip_vision_config {
    vf_clip_encoder_config enc;
    int image_size;   /* H = W */
    int patch_size;   /* P; (H/P)^2 patches + 1 class token */
    int num_channels; /* 3 */
} vf_clip_vision_config;

typedef struct vf_clip_text_config {
    vf_clip_encoder_config enc;
    int vocab_size;
    int max_positions; /* 77 */
    int bos_token_id, eos_token_id, pad_token_id;
} vf_clip_text_config;

typedef struct vf_clip_config {
    vf_clip_vision_config vision;
    vf_clip_text_config text;
    int projection_dim;          /* D, shared embedding width */
    float logit_scale_init;      /* log of the initial temperature */
    int random_weights;          /* "vflclip_random_weights": true (make-model) */
} vf_clip_config;

const char *vf_activation_name(vf_activation act);

/* Parses config.json text; `name` (the file path) goes into error messages. */
int vf_clip_config_parse(const char *json, const char *name, vf_clip_config *cfg, vf_error *err);
/* Reads and parses DIR/config.json (or a path to the file itself). */
int vf_clip_config_load(const char *path, vf_clip_config *cfg, vf_error *err);
/* Presets: tiny, vit-b-32, vit-b-16, vit-l-14, vit-l-14-336 (real CLIP shapes). */
int vf_clip_config_preset(const char *like, vf_clip_config *cfg, vf_error *err);
/* Checks internal consistency (positive sizes, heads divide width, ...). */
int vf_clip_config_validate(const vf_clip_config *cfg, const char *name, vf_error *err);
/* A config.json that transformers' CLIPModel.from_pretrained loads; malloc'd. */
char *vf_clip_config_to_json(const vf_clip_config *cfg);

#endif
