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

#include "cpu/clip_shapes.h"
#include "util/vf_error.h"

typedef struct vf_clip_config {
    vf_clip_vision_config vision;
    vf_clip_text_config text;
    int projection_dim;          /* D, shared embedding width */
    float logit_scale_init;      /* log of the initial temperature */
    int random_weights;          /* "vflclip_random_weights": true (make-model) */
} vf_clip_config;

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
