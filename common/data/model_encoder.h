/* model_encoder: a checkpoint's pixels-to-embeddings pipeline, opened in one
 * call from an open checkpoint (clip/checkpoint.h): the preprocessing the
 * checkpoint asks for, its vision tower, the
 * device it runs on (CPU or CUDA, in its precision) and the encoder that
 * vf_embed_split runs.  `vflclip train`, `vflclip predict` and the image
 * party open it the same way. */
#ifndef VF_DATA_MODEL_ENCODER_H
#define VF_DATA_MODEL_ENCODER_H

#include "clip/checkpoint.h"
#include "clip/clip_model.h"
#include "data/embed_cache.h"
#include "device/device.h"
#include "image/preprocess.h"
#include "util/vf_error.h"

typedef struct vf_model_encoder {
    vf_preprocess_cfg pp;
    vf_vision_tower vt;
    vf_device dev;
    vf_device_vision dv;
    vf_image_encoder enc;    /* what vf_embed_split runs: the device tower, its compute label in the cache key */
    int open;
    vf_checkpoint *own;      /* the checkpoint vf_model_encoder_open opened for it (NULL: borrowed) */
} vf_model_encoder;

/* batch: images per forward.  ck (opened with its weights) outlives m.  On
 * failure nothing stays open. */
int vf_model_encoder_open_from(vf_model_encoder *m, const vf_checkpoint *ck, int batch, vf_device_kind kind,
                               vf_device_precision precision, vf_error *err);
/* Opens model_dir's checkpoint for this encoder alone (the encoder owns it). */
int vf_model_encoder_open(vf_model_encoder *m, const char *model_dir, int batch, vf_device_kind kind,
                          vf_device_precision precision, vf_error *err);
/* (B, 3, S, S) preprocessed pixels -> (B, D) embeddings on the device. */
int vf_model_encoder_encode(vf_model_encoder *m, const float *pixels, int B, float *out, vf_error *err);
void vf_model_encoder_close(vf_model_encoder *m);

#endif
