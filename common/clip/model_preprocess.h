/* model_preprocess: the preprocessing a checkpoint directory asks for.  The
 * image layer preprocesses by a config it is given; choosing that config
 * from a checkpoint's files is this layer's:
 *   OpenCLIP (open_clip_config.json): its preprocess_cfg;
 *   Hugging Face: preprocessor_config.json (transformers 4.x), else
 *   processor_config.json's "image_processor" (5.x). */
#ifndef VF_CLIP_MODEL_PREPROCESS_H
#define VF_CLIP_MODEL_PREPROCESS_H

#include "image/preprocess.h"
#include "util/vf_error.h"

int vf_model_preprocess_config(const char *model_dir, vf_preprocess_cfg *cfg, vf_error *err);

#endif
