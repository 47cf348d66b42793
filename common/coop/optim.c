/* optim: Adam and SGD as torch.optim computes them, CoOp's cosine schedule
 * with warm-up, and optimizer-state checkpoints (see optim.h). */
#include "coop/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

vf_optim_config vf_optim_defaults(vf_optim_kind kind) {
    vf_optim_config c = {kind, 0.0f, 0.9f, 0.999f, 1e-8f, 0.9f};
    return c;
}

const char *vf_optim_kind_name(vf_optim_kind kind) { return kind == VF_OPT_SGD ? "sgd" : "adam"; }

int vf_optim_kind_parse(const char *s, vf_optim_kind *kind, vf_error *err) {
    if (strcmp(s, "adam") == 0) *kind = VF_OPT_ADAM;
    else if (strcmp(s, "sgd") == 0) *kind = VF_OPT_SGD;
    else return vf_fail(err, "unknown optimizer '%s' (want adam or sgd)", s);
    return 0;
}

int vf_optim_init(vf_optim *o, const vf_optim_config *cfg, long n, vf_error *err) {
    memset(o, 0, sizeof *o);
    if (n <= 0) return vf_fail(err, "optimizer: %ld parameters", n);
    o->cfg = *cfg;
    o->n = n;
    int nbuf = cfg->kind == VF_OPT_ADAM ? 2 : 1;
    o->m = calloc((size_t)n * nbuf, sizeof(float));   // one allocation for all state
    if (!o->m) return vf_fail(err, "optimizer: out of memory for %ld floats", n * nbuf);
    o->v = nbuf == 2 ? o->m + n : NULL;
    return 0;
}

void vf_optim_free(vf_optim *o) {
    free(o->m);
    o->m = o->v = NULL;
}

void vf_optim_step(vf_optim *o, float *params, const float *grad, float lr) {
    const vf_optim_config *c = &o->cfg;
    o->step++;
    if (c->kind == VF_OPT_ADAM) {
        float bc1 = 1.0f - powf(c->beta1, (float)o->step);
        float bc2_sqrt = sqrtf(1.0f - powf(c->beta2, (float)o->step));
        float step_size = lr / bc1;
        for (long i = 0; i < o->n; i++) {
            float g = grad[i] + c->weight_decay * params[i];
            o->m[i] = c->beta1 * o->m[i] + (1.0f - c->beta1) * g;
            o->v[i] = c->beta2 * o->v[i] + (1.0f - c->beta2) * g * g;
            float denom = sqrtf(o->v[i]) / bc2_sqrt + c->eps;
            params[i] -= step_size * o->m[i] / denom;
        }
    } else {
        for (long i = 0; i < o->n; i++) {
            float g = grad[i] + c->weight_decay * params[i];
            if (c->momentum != 0.0f) {
                o->m[i] = o->step == 1 ? g : c->momentum * o->m[i] + g;
                g = o->m[i];
            }
            params[i] -= lr * g;
        }
    }
}

int vf_optim_add_to_writer(const vf_optim *o, vf_st_writer *w, const char *prefix, vf_error *err) {
    char name[256];
    int64_t shape[1] = {o->n};
    snprintf(name, sizeof name, "%sstep", prefix);
    if (vf_st_writer_add_raw(w, name, VF_DT_I64, 0, shape, &o->step, err) != 0) return -1;
    snprintf(name, sizeof name, "%sm", prefix);
    if (vf_st_writer_add_f32(w, name, VF_DT_F32, 1, shape, o->m, err) != 0) return -1;
    if (o->v) {
        snprintf(name, sizeof name, "%sv", prefix);
        if (vf_st_writer_add_f32(w, name, VF_DT_F32, 1, shape, o->v, err) != 0) return -1;
    }
    snprintf(name, sizeof name, "%skind", prefix);
    return vf_st_writer_meta(w, name, vf_optim_kind_name(o->cfg.kind), err);
}

int vf_optim_load_from(vf_optim *o, const vf_safetensors *st, const char *prefix, vf_error *err) {
    char name[256];
    snprintf(name, sizeof name, "%skind", prefix);
    const char *kind = vf_st_meta(st, name);
    if (!kind) return vf_fail(err, "%s: missing metadata %s (not an optimizer checkpoint?)", st->path, name);
    if (strcmp(kind, vf_optim_kind_name(o->cfg.kind)) != 0)
        return vf_fail(err, "%s: optimizer state is %s but the run uses %s", st->path, kind, vf_optim_kind_name(o->cfg.kind));
    snprintf(name, sizeof name, "%sstep", prefix);
    const vf_st_tensor *t = vf_st_require(st, name, err);
    if (!t) return -1;
    if (t->dtype != VF_DT_I64 || t->ndim != 0) return vf_fail(err, "%s: %s must be an I64 scalar", st->path, name);
    int64_t step;
    memcpy(&step, t->data, sizeof step);
    if (step < 0) return vf_fail(err, "%s: %s is negative (%lld)", st->path, name, (long long)step);
    int64_t shape[1] = {o->n};
    snprintf(name, sizeof name, "%sm", prefix);
    if (vf_st_read_f32(st, name, 1, shape, o->m, err) != 0) return -1;
    if (o->v) {
        snprintf(name, sizeof name, "%sv", prefix);
        if (vf_st_read_f32(st, name, 1, shape, o->v, err) != 0) return -1;
    }
    o->step = (long)step;
    return 0;
}

int vf_optim_save(const vf_optim *o, const char *path, vf_error *err) {
    vf_st_writer w;
    vf_st_writer_init(&w);
    vf_st_writer_checksum(&w);   /* a state file: a torn or flipped copy is refused on load */
    int rc = vf_optim_add_to_writer(o, &w, "optim.", err);
    if (rc == 0) rc = vf_st_writer_save(&w, path, err);
    vf_st_writer_free(&w);
    return rc;
}

int vf_optim_load(vf_optim *o, const char *path, vf_error *err) {
    vf_safetensors st;
    if (vf_st_open(&st, path, err) != 0) return -1;
    int rc = vf_optim_load_from(o, &st, "optim.", err);
    vf_st_close(&st);
    return rc;
}

float vf_lr_at_epoch(const vf_lr_schedule *s, int epoch) {
    if (s->warmup != VF_WARMUP_NONE && epoch < s->warmup_epochs) {
        if (s->warmup == VF_WARMUP_CONSTANT || epoch == 0) return s->warmup_lr;
        return s->base_lr * (float)epoch / (float)s->warmup_epochs;
    }
    if (s->max_epochs <= 0) return s->base_lr;
    /* Dassl's warm-up wrappers step their successor only once warm-up is over
     * (WARMUP_RECOUNT, the default): the cosine starts at base_lr on the first
     * epoch after warm-up and counts its own epochs from there. */
    int t = epoch;
    if (s->warmup != VF_WARMUP_NONE && s->warmup_epochs > 0) t -= s->warmup_epochs;
    return (float)(s->base_lr * (1.0 + cos(M_PI * (double)t / s->max_epochs)) / 2.0);
}

int vf_warmup_kind_parse(const char *s, vf_warmup_kind *kind, vf_error *err) {
    if (strcmp(s, "none") == 0) *kind = VF_WARMUP_NONE;
    else if (strcmp(s, "constant") == 0) *kind = VF_WARMUP_CONSTANT;
    else if (strcmp(s, "linear") == 0) *kind = VF_WARMUP_LINEAR;
    else return vf_fail(err, "unknown warm-up '%s' (want none, constant or linear)", s);
    return 0;
}
