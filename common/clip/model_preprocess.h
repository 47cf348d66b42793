/* model_preprocess: the preprocessing a checkpoint directory asks for, by
 * directory (for callers that have no open checkpoint; clip/checkpoint.h
 * chooses: OpenCLIP's preprocess_cfg, or Hugging Face's
 * preprocessor_config.json (transformers 4.x), else processor_config.json's
 * "image_processor" (5.x)).  With an open checkpoint use
 * vf_checkpoint_preprocess. */
#ifndef VF_CLIP_MODEL_PREPROCESS_H
#define VF_CLIP_MODEL_PREPROCESS_H

#include "image/preprocess.h"
#include "util/vf_error.h"

/* vf_checkpoint_open_files + vf_checkpoint_preprocess + close (the tensor file is not opened). */
int vf_model_preprocess_config(const char *model_dir, vf_preprocess_cfg *cfg, vf_error *err);

#endif
