/* open_clip_resnet: OpenCLIP ModifiedResNet weights -> vf_resnet (see
 * open_clip_resnet.h).  Tensor names follow open_clip's modified_resnet.py:
 *   visual.conv{1,2,3}.weight, visual.bn{1,2,3}.*                 stem
 *   visual.layer{1..4}.{i}.conv{1,2,3}.weight, .bn{1,2,3}.*       Bottleneck
 *   visual.layer{1..4}.0.downsample.0.weight, .downsample.1.*     shortcut
 *   visual.attnpool.positional_embedding, .{q,k,v,c}_proj.{weight,bias} */
#include "clip/open_clip_resnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5f  // torch.nn.BatchNorm2d's default, used by open_clip

vf_resnet_config vf_open_clip_resnet_config(const vf_open_clip_config *oc) {
    vf_resnet_config c = {.width = oc->vision_width, .image_size = oc->image_size,
                          .heads = oc->vision_width * 32 / oc->vision_head_width, .output_dim = oc->embed_dim};
    memcpy(c.layers, oc->resnet_layers, sizeof c.layers);
    return c;
}

// conv weight "<conv>.weight" (cout, cin, k, k) and BatchNorm "<bn>.*", folded.
// scratch holds 4*cout floats.
static int load_conv_bn(const vf_safetensors *st, vf_conv2d *c, const char *conv, const char *bn, float *scratch,
                        vf_error *err) {
    char name[256];
    int64_t wshape[4] = {c->cout, c->cin, c->kh, c->kw}, vshape[1] = {c->cout};
    snprintf(name, sizeof name, "%s.weight", conv);
    if (vf_st_read_f32(st, name, 4, wshape, c->weight, err)) return -1;
    static const char *const parts[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s.%s", bn, parts[i]);
        if (vf_st_read_f32(st, name, 1, vshape, scratch + (size_t)i * c->cout, err)) return -1;
    }
    const float *var = scratch + 3 * (size_t)c->cout;
    for (int i = 0; i < c->cout; i++)
        if (!(var[i] >= 0)) return vf_fail(err, "%s: tensor %s.running_var[%d] is negative or NaN", st->path, bn, i);
    memset(c->bias, 0, (size_t)c->cout * sizeof(float));  // the convolutions have no bias of their own
    vf_conv2d_fold_bn(c->weight, c->bias, c->cout, c->cin * c->kh * c->kw, scratch, scratch + c->cout,
                      scratch + 2 * (size_t)c->cout, var, BN_EPS);
    return 0;
}

static int load_linear(const vf_safetensors *st, const char *prefix, int out, int in, float *w, float *b, vf_error *err) {
    char name[256];
    int64_t wshape[2] = {out, in}, bshape[1] = {out};
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (vf_st_read_f32(st, name, 2, wshape, w, err)) return -1;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return vf_st_read_f32(st, name, 1, bshape, b, err);
}

static int load_all(vf_resnet *r, const vf_safetensors *st, float *scratch, vf_error *err) {
    char conv[128], bn[128];
    for (int i = 0; i < 3; i++) {
        snprintf(conv, sizeof conv, "visual.conv%d", i + 1);
        snprintf(bn, sizeof bn, "visual.bn%d", i + 1);
        if (load_conv_bn(st, &r->stem[i], conv, bn, scratch, err)) return -1;
    }
    int n = 0;
    for (int s = 0; s < 4; s++)
        for (int i = 0; i < r->cfg.layers[s]; i++, n++) {
            vf_bottleneck *b = &r->blocks[n];
            vf_conv2d *convs[3] = {&b->conv1, &b->conv2, &b->conv3};
            for (int j = 0; j < 3; j++) {
                snprintf(conv, sizeof conv, "visual.layer%d.%d.conv%d", s + 1, i, j + 1);
                snprintf(bn, sizeof bn, "visual.layer%d.%d.bn%d", s + 1, i, j + 1);
                if (load_conv_bn(st, convs[j], conv, bn, scratch, err)) return -1;
            }
            if (b->has_downsample) {
                snprintf(conv, sizeof conv, "visual.layer%d.%d.downsample.0", s + 1, i);
                snprintf(bn, sizeof bn, "visual.layer%d.%d.downsample.1", s + 1, i);
                if (load_conv_bn(st, &b->downsample, conv, bn, scratch, err)) return -1;
            } else {
                snprintf(conv, sizeof conv, "visual.layer%d.%d.downsample.0.weight", s + 1, i);
                if (vf_st_find(st, conv))
                    return vf_fail(err, "%s: tensor %s is present but the config's block has no downsampling "
                                        "(config and weights disagree)", st->path, conv);
            }
        }
    for (int s = 0; s < 4; s++) {  // one block too many in the file: config and weights disagree
        snprintf(conv, sizeof conv, "visual.layer%d.%d.conv1.weight", s + 1, r->cfg.layers[s]);
        if (vf_st_find(st, conv))
            return vf_fail(err, "%s: tensor %s is present but the config has %d blocks in layer%d "
                                "(config and weights disagree)", st->path, conv, r->cfg.layers[s], s + 1);
    }
    vf_attnpool *p = &r->attnpool;
    int64_t pos_shape[2] = {(int64_t)p->grid * p->grid + 1, p->embed_dim};
    if (vf_st_read_f32(st, "visual.attnpool.positional_embedding", 2, pos_shape, p->pos, err) ||
        load_linear(st, "visual.attnpool.q_proj", p->embed_dim, p->embed_dim, p->q_w, p->q_b, err) ||
        load_linear(st, "visual.attnpool.k_proj", p->embed_dim, p->embed_dim, p->k_w, p->k_b, err) ||
        load_linear(st, "visual.attnpool.v_proj", p->embed_dim, p->embed_dim, p->v_w, p->v_b, err) ||
        load_linear(st, "visual.attnpool.c_proj", p->output_dim, p->embed_dim, p->c_w, p->c_b, err))
        return -1;
    return 0;
}

int vf_open_clip_resnet_load(vf_resnet *r, const vf_open_clip_config *oc, const vf_safetensors *st, vf_error *err) {
    if (!oc->is_resnet) return vf_fail(err, "%s: the config describes a ViT, not a ModifiedResNet", st->path);
    vf_resnet_config cfg = vf_open_clip_resnet_config(oc);
    if (vf_resnet_init(r, &cfg, err)) return vf_error_prefix(err, "%s", st->path);
    float *scratch = malloc((size_t)4 * oc->vision_width * 32 * sizeof(float));  // widest BatchNorm: 4 x 32*width
    int rc = scratch ? load_all(r, st, scratch, err) : vf_fail(err, "%s: out of memory", st->path);
    free(scratch);
    if (rc) vf_resnet_free(r);
    return rc;
}
