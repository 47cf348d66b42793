/* party_share: an image party's part of a secure sum (see party_share.h). */
#include "coop/party_share.h"
#include "metrics/eval_counts.h"
#include "secagg/masked_sum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int vf_party_share_init(vf_party_share *ps, int C, int D, int B_max, float clip, vf_error *err) {
    memset(ps, 0, sizeof *ps);
    if (C < 2 || D < 1 || B_max < 1) return vf_fail(err, "party share: %d classes, width %d, batch %d", C, D, B_max);
    if (!(clip >= 0) || !isfinite(clip)) return vf_fail(err, "party share: clip %g must be a finite number >= 0", clip);
    ps->C = C;
    ps->D = D;
    ps->B_max = B_max;
    ps->clip = clip;
    if (vf_loss_step_init(&ps->ls, C, D, B_max, err)) return -1;
    if (clip > 0) {
        vf_text_grad_privacy p = vf_text_grad_privacy_default();
        p.clip = clip;
        if (vf_text_grad_guard_init(&ps->guard, &p, C, D, B_max, err)) goto fail;
        ps->guarded = 1;
    }
    ps->dtext = malloc((size_t)C * D * sizeof(float));
    ps->probs = malloc((size_t)B_max * C * sizeof(float));
    if (!ps->dtext || !ps->probs) {
        vf_fail(err, "party share: out of memory for %d x %d", C, D);
        goto fail;
    }
    return 0;
fail:
    vf_party_share_free(ps);
    return -1;
}

void vf_party_share_free(vf_party_share *ps) {
    if (ps->ls.arena.base) vf_loss_step_free(&ps->ls);
    if (ps->guarded) vf_text_grad_guard_free(&ps->guard);
    free(ps->dtext);
    free(ps->probs);
    memset(ps, 0, sizeof *ps);
}

size_t vf_party_share_step_len(int C, int D) { return 2 + (size_t)C * D; }
size_t vf_party_share_eval_len(int C) { return vf_eval_counts_len(C) + 1; }
size_t vf_party_share_range_len(int C) { return 3 * (size_t)C; }

#define RANGE_SCALE 128.0   /* log-odds / this: |z| <= 104, so sums of squares of 10^6 examples stay below 2^23 */

/* Scores of the whole split sp in chunks: each chunk's softmax (B, C) into
 * probs (or scratch), then `each` on it. */
typedef int (*chunk_fn)(void *ctx, const float *p, const int *labels, int B, float loss, vf_error *err);
static int for_each_chunk(vf_party_share *ps, const vf_embedded_split *sp, const float *text, float logit_scale, float *probs,
                          chunk_fn each, void *ctx, vf_error *err) {
    const int C = ps->C, chunk = ps->B_max < 256 ? ps->B_max : 256;
    int idx[256];
    for (int first = 0; first < sp->n; first += chunk) {
        int B = sp->n - first < chunk ? sp->n - first : chunk;
        for (int b = 0; b < B; b++) idx[b] = first + b;
        float l;
        if (vf_loss_step_run(&ps->ls, sp, idx, B, text, logit_scale, &l, NULL, err)) return -1;
        float *p = probs ? probs + (size_t)first * C : ps->probs;
        vf_softmax_rows(ps->ls.logits, p, B, C);   // (B, C)
        if (each(ctx, p, sp->labels + first, B, l, err)) return -1;
    }
    return 0;
}

typedef struct range_ctx { int C; double *m; } range_ctx;
static int add_range(void *ctx, const float *p, const int *labels, int B, float loss, vf_error *err) {
    range_ctx *r = ctx;
    vf_score_moments_add(r->m, r->C, p, B);
    return 0;
}

int vf_party_share_range_vector(vf_party_share *ps, const vf_embedded_split *sp, const float *text, float logit_scale,
                                uint64_t *v, vf_error *err) {
    const int C = ps->C;
    double m[3 * VF_METRICS_MAX_CLASSES] = {0};
    range_ctx r = {C, m};
    if (for_each_chunk(ps, sp, text, logit_scale, NULL, add_range, &r, err)) return -1;
    for (int c = 0; c < C; c++) {
        v[3 * c] = (uint64_t)m[3 * c];
        double s[2] = {m[3 * c + 1] / RANGE_SCALE, m[3 * c + 2] / (RANGE_SCALE * RANGE_SCALE)};
        if (vf_fx_encode(s, 2, v + 3 * c + 1, "score range", err)) return -1;
    }
    return 0;
}

int vf_party_share_read_range(const uint64_t *sum, int C, vf_auc_grid *grid, vf_error *err) {
    double m[3 * VF_METRICS_MAX_CLASSES];
    for (int c = 0; c < C; c++) {
        double s[2];
        vf_fx_decode(sum + 3 * c + 1, 2, s);
        m[3 * c] = (double)sum[3 * c];
        m[3 * c + 1] = s[0] * RANGE_SCALE;
        m[3 * c + 2] = s[1] * RANGE_SCALE * RANGE_SCALE;
    }
    return vf_auc_grid_from_moments(grid, C, m, err);
}

int vf_party_share_step_vector(vf_party_share *ps, const vf_embedded_split *sp, const int *idx, int n_own, int B,
                               const float *text, float logit_scale, uint64_t *v, vf_error *err) {
    const long CD = (long)ps->C * ps->D;
    if (n_own < 0 || n_own > B || n_own > ps->B_max)
        return vf_fail(err, "party share: %d own examples of a batch of %d (at most %d)", n_own, B, ps->B_max);
    double loss_share = 0;
    long clipped_before = ps->guarded ? ps->guard.clipped : 0;
    memset(ps->dtext, 0, (size_t)CD * sizeof(float));
    if (n_own > 0) {
        float loss;
        if (vf_loss_step_run(&ps->ls, sp, idx, n_own, text, logit_scale, &loss, ps->dtext, err)) return -1;   // (C, D) mean over own
        loss_share = (double)loss * n_own / B;
        if (ps->guarded) {
            const vf_guard_batch gb = {n_own, ps->ls.image, ps->ls.labels, ps->ls.logits};
            vf_text_grad_guard_begin(&ps->guard);
            if (vf_text_grad_guard_add(&ps->guard, &gb, text, logit_scale, ps->dtext, err)) return -1;
            memcpy(ps->dtext, ps->guard.sum, (size_t)CD * sizeof(float));   // clipped sum, not divided
        } else {
            const float f = (float)n_own / (float)B;
            for (long i = 0; i < CD; i++) ps->dtext[i] *= f;
        }
    }
    if (vf_fx_encode(&loss_share, 1, v, "loss share", err) || vf_fx_encode_f(ps->dtext, (size_t)CD, v + 1, "dL/dT share", err))
        return -1;
    v[1 + CD] = (uint64_t)(ps->guarded ? ps->guard.clipped - clipped_before : 0);
    return 0;
}

typedef struct eval_ctx { int C; const vf_auc_grid *grid; uint64_t *v; double loss_sum; } eval_ctx;
static int add_eval(void *ctx, const float *p, const int *labels, int B, float loss, vf_error *err) {
    eval_ctx *e = ctx;
    e->loss_sum += (double)loss * B;
    return vf_eval_counts_add(e->v, e->C, p, labels, B, e->grid, err);
}

int vf_party_share_eval_vector(vf_party_share *ps, const vf_embedded_split *sp, const float *text, float logit_scale,
                               const vf_auc_grid *grid, uint64_t *v, float *probs, vf_error *err) {
    const size_t nc = vf_eval_counts_len(ps->C);
    memset(v, 0, (nc + 1) * sizeof *v);
    eval_ctx e = {ps->C, grid, v, 0};
    if (for_each_chunk(ps, sp, text, logit_scale, probs, add_eval, &e, err)) return -1;
    return vf_fx_encode(&e.loss_sum, 1, v + nc, "evaluation loss sum", err);
}

int vf_party_share_read_step(const uint64_t *sum, int C, int D, double *loss, float *dtext, uint64_t *clipped,
                             vf_error *err) {
    const size_t CD = (size_t)C * D;
    vf_fx_decode(sum, 1, loss);
    for (size_t i = 0; i < CD; i++) {
        double x;
        vf_fx_decode(sum + 1 + i, 1, &x);
        dtext[i] = (float)x;
    }
    *clipped = sum[1 + CD];
    if (!isfinite(*loss) || *loss < 0 || *loss > 1e6)
        return vf_fail(err, "the secure sum's loss %g is not a loss: the masks did not cancel", *loss);
    return 0;
}

double vf_party_share_read_eval_loss(const uint64_t *sum, int C) {
    double x;
    vf_fx_decode(sum + vf_eval_counts_len(C), 1, &x);
    return x;
}
