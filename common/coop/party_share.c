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
    if (!ps->dtext) {
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
    memset(ps, 0, sizeof *ps);
}

size_t vf_party_share_step_len(int C, int D) { return 2 + (size_t)C * D; }
size_t vf_party_share_eval_len(int C) { return vf_eval_counts_len(C) + 1; }
size_t vf_party_share_range_len(int C) { return 3 * (size_t)C; }

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

#define RANGE_SCALE 128.0   /* log-odds / this: |z| <= 104, so sums of squares of 10^6 examples stay below 2^23 */

int vf_party_share_range_vector(vf_party_share *ps, const vf_embedded_split *sp, const float *text, float logit_scale,
                                float *probs, uint64_t *v, vf_error *err) {
    const int C = ps->C;
    double loss_sum, m[3 * VF_METRICS_MAX_CLASSES] = {0};
    if (vf_split_scores(&ps->ls, sp, text, logit_scale, probs, &loss_sum, err)) return -1;   // (n, C)
    vf_score_moments_add(m, C, probs, sp->n);
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

int vf_party_share_eval_vector(vf_party_share *ps, const vf_embedded_split *sp, const float *text, float logit_scale,
                               const vf_auc_grid *grid, float *probs, uint64_t *v, vf_error *err) {
    const size_t nc = vf_eval_counts_len(ps->C);
    double loss_sum;
    memset(v, 0, (nc + 1) * sizeof *v);
    if (vf_split_scores(&ps->ls, sp, text, logit_scale, probs, &loss_sum, err) ||   // (n, C)
        vf_eval_counts_add(v, ps->C, probs, sp->labels, sp->n, grid, err))
        return -1;
    return vf_fx_encode(&loss_sum, 1, v + nc, "evaluation loss sum", err);
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
