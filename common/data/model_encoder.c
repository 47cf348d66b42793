/* model_encoder: preprocessing + vision tower + device from one checkpoint (see model_encoder.h). */
#include "data/model_encoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int encode_on_device(void *ctx, const float *pixels, int B, float *out, vf_error *err) {
    return vf_device_vision_encode(ctx, pixels, B, out, err);
}

int vf_model_encoder_open_from(vf_model_encoder *m, const vf_checkpoint *ck, int batch, vf_device_kind kind,
                               vf_device_precision precision, vf_error *err) {
    memset(m, 0, sizeof *m);
    if (vf_checkpoint_preprocess(ck, &m->pp, err) || vf_vision_load_from(&m->vt, ck, batch, err)) return -1;
    if (vf_device_open(&m->dev, kind, precision, err)) goto fail_tower;
    if (vf_device_vision_open(&m->dv, &m->dev, &m->vt, err)) goto fail_device;
    m->enc = vf_image_encoder_cpu(&m->vt);
    if (m->dev.kind != VF_DEVICE_CPU) {   /* the CPU tower is its own encoder; elsewhere the device runs it */
        m->enc.encode = encode_on_device;
        m->enc.ctx = &m->dv;
        snprintf(m->enc.compute, sizeof m->enc.compute, "%s-%s", vf_device_kind_name(m->dev.kind),
                 vf_device_precision_name(m->dev.precision));
    }
    m->open = 1;
    return 0;
fail_device:
    vf_device_close(&m->dev);
fail_tower:
    vf_vision_free(&m->vt);
    return -1;
}

int vf_model_encoder_open(vf_model_encoder *m, const char *model_dir, int batch, vf_device_kind kind,
                          vf_device_precision precision, vf_error *err) {
    memset(m, 0, sizeof *m);
    vf_checkpoint *ck = malloc(sizeof *ck);
    if (!ck) return vf_fail(err, "%s: out of memory", model_dir);
    if (vf_checkpoint_open(ck, model_dir, err) == 0) {
        if (vf_model_encoder_open_from(m, ck, batch, kind, precision, err) == 0) {
            m->own = ck;
            return 0;
        }
        vf_checkpoint_close(ck);
    }
    free(ck);
    return -1;
}

int vf_model_encoder_encode(vf_model_encoder *m, const float *pixels, int B, float *out, vf_error *err) {
    return vf_device_vision_encode(&m->dv, pixels, B, out, err);
}

void vf_model_encoder_close(vf_model_encoder *m) {
    if (!m->open) return;
    vf_device_vision_close(&m->dv);
    vf_device_close(&m->dev);
    vf_vision_free(&m->vt);
    if (m->own) {
        vf_checkpoint_close(m->own);
        free(m->own);
        m->own = NULL;
    }
    m->open = 0;
}
