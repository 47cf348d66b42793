/* make_model: writes a random-weight CLIP model directory in exactly the
 * Hugging Face layout (config.json, model.safetensors, preprocessor_config.json
 * and the project's small byte-level vocabulary), loadable by transformers'
 * CLIPModel.from_pretrained and by this project.  config.json carries
 * "vflclip_random_weights": true so every program can say loudly that its
 * outputs mean nothing for dermatology.
 *
 * Weights are seeded and deterministic: each tensor draws from its own
 * stream keyed by (seed, tensor name), so the file does not depend on the
 * order tensors are generated in. */
#ifndef VF_CLIP_MAKE_MODEL_H
#define VF_CLIP_MAKE_MODEL_H

#include <stdint.h>
#include "formats/safetensors.h"
#include "util/vf_error.h"

/* like: tiny | vit-b-32 | vit-b-16 | vit-l-14 | vit-l-14-336; dtype F32, F16
 * or BF16.  config_only writes config.json alone (for checking presets). */
int vf_make_model(const char *like, uint64_t seed, vf_dtype dtype, const char *out_dir, int config_only, vf_error *err);

#endif
