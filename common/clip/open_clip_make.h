/* open_clip_make: writes a random-weight OpenCLIP checkpoint directory in the
 * layout open_clip's hub checkpoints have:
 *   open_clip_config.json        {"model_cfg": ..., "preprocess_cfg": ...}
 *                                 (+ "vflclip_random_weights": true, which
 *                                 open_clip ignores and every vflclip program
 *                                 reports loudly)
 *   open_clip_model.safetensors  every tensor of open_clip's CLIP state_dict,
 *                                 names and shapes as open_clip.load_checkpoint
 *                                 loads strictly: for ModifiedResNet the
 *                                 BatchNorm running_mean/running_var (non-trivial
 *                                 values, so folding is exercised) and
 *                                 num_batches_tracked (I64)
 *   vocab.json, merges.txt, ...  the project's small vocabulary (tokenizer.h),
 *                                 so `vflclip embed --text` works on it too.
 * Seeded and deterministic: each tensor draws from a stream keyed by (seed,
 * tensor name). */
#ifndef VF_OPEN_CLIP_MAKE_H
#define VF_OPEN_CLIP_MAKE_H

#include <stdint.h>
#include "clip/open_clip_config.h"
#include "formats/safetensors.h"
#include "util/vf_error.h"

/* Writes the checkpoint for cfg (a preset or a parsed config); dtype F32,
 * F16 or BF16 for the float tensors. */
int vf_open_clip_make_model(const vf_open_clip_config *cfg, uint64_t seed, vf_dtype dtype, const char *out_dir,
                            vf_error *err);

/* 1 when a make-model command line asks for an OpenCLIP checkpoint:
 * --like rn50x4|rn50x16|rn50x64 (the ResNets exist only in OpenCLIP layout),
 * --layout open_clip, or --open-clip-config FILE. */
int vf_open_clip_make_wanted(int argc, char **argv);

/* The make-model subcommand for OpenCLIP layouts:
 *   --like rn50x4|rn50x16|rn50x64|vit-b-32|vit-b-16|vit-l-14|vit-l-14-336
 *                                    a preset (the ViTs with --layout open_clip), or
 *   --open-clip-config FILE          any ViT/ModifiedResNet config (hub format or
 *                                    open_clip's bare model config; e.g. reduced
 *                                    widths for tests)
 *   --seed N --dtype f32|f16|bf16 --out DIR [--config-only]
 * argv starts at the subcommand name; returns the exit status. */
int vf_open_clip_make_main(int argc, char **argv);

#endif
