/* text_grad_guard: accumulation, per-example clipping and noise on dL/dT
 * (see text_grad_guard.h). */
#include "privacy/text_grad_guard.h"
#include "privacy/gauss.h"
#include "privacy/rdp.h"

#include <math.h>
#include <string.h>

vf_text_grad_privacy vf_text_grad_privacy_default(void) {
    return (vf_text_grad_privacy){.accumulate = 1, .clip = 0, .noise_multiplier = 0, .delta = 1e-5, .epsilon_budget = 0};
}

int vf_text_grad_privacy_check(const vf_text_grad_privacy *p, const char *what, vf_error *err) {
    if (p->accumulate < 1 || p->accumulate > 1 << 20)
        return vf_fail(err, "%s: text_grad_accumulate %d must be 1..%d", what, p->accumulate, 1 << 20);
    if (!(p->clip >= 0) || !isfinite(p->clip)) return vf_fail(err, "%s: text_grad_clip %g must be >= 0", what, p->clip);
    if (!(p->noise_multiplier >= 0) || !isfinite(p->noise_multiplier))
        return vf_fail(err, "%s: text_grad_noise %g must be >= 0", what, p->noise_multiplier);
    if (p->noise_multiplier > 0 && p->clip == 0)
        return vf_fail(err, "%s: text_grad_noise %g needs text_grad_clip > 0 (the noise is scaled to the clip bound)",
                       what, p->noise_multiplier);
    if (!(p->delta > 0 && p->delta < 1)) return vf_fail(err, "%s: dp_delta %g must be in (0, 1)", what, p->delta);
    if (!(p->epsilon_budget >= 0) || !isfinite(p->epsilon_budget))
        return vf_fail(err, "%s: epsilon_budget %g must be >= 0", what, p->epsilon_budget);
    if (p->epsilon_budget > 0 && p->noise_multiplier == 0)
        return vf_fail(err, "%s: epsilon_budget %g needs text_grad_noise > 0 (without noise epsilon is infinite)", what,
                       p->epsilon_budget);
    return 0;
}

int vf_text_grad_privacy_active(const vf_text_grad_privacy *p) { return p->accumulate > 1 || p->clip > 0; }

double vf_text_grad_epsilon(const vf_text_grad_privacy *p, int batch, int n_train, long steps) {
    if (steps <= 0) return 0;
    if (p->noise_multiplier <= 0 || p->clip <= 0) return INFINITY;
    double q = (double)batch * p->accumulate / n_train;
    return vf_rdp_epsilon(q > 1 ? 1 : q, p->noise_multiplier, steps, p->delta);
}

/* The arena's layout, for both of its passes (util/arena.h). */
static void guard_carve(vf_text_grad_guard *g) {
    const size_t C = (size_t)g->C, D = (size_t)g->D, B_max = (size_t)g->B_max;
    g->sum = vf_arena_floats(&g->arena, C * D);
    g->unit_text = vf_arena_floats(&g->arena, C * D);
    g->unit_image = vf_arena_floats(&g->arena, B_max * D);
    g->weight = vf_arena_floats(&g->arena, B_max * C);
    g->text_norm = vf_arena_floats(&g->arena, C);
}

int vf_text_grad_guard_init(vf_text_grad_guard *g, const vf_text_grad_privacy *p, int C, int D, int B_max,
                            vf_error *err) {
    memset(g, 0, sizeof *g);
    if (vf_text_grad_privacy_check(p, "text gradient privacy", err)) return -1;
    g->p = *p;
    g->C = C;
    g->D = D;
    g->B_max = B_max;
    vf_arena_plan(&g->arena);
    guard_carve(g);
    if (vf_arena_commit(&g->arena, err)) return -1;
    guard_carve(g);
    return 0;
}

void vf_text_grad_guard_free(vf_text_grad_guard *g) { vf_arena_free(&g->arena); }

void vf_text_grad_guard_begin(vf_text_grad_guard *g) {
    memset(g->sum, 0, (size_t)g->C * g->D * sizeof(float));
    g->examples = 0;
    g->batches = 0;
}

static int unit_rows(float *out, float *norms, const float *x, int R, int D) {
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)x[(size_t)r * D + d] * x[(size_t)r * D + d];
        if (!(ss > 0) || !isfinite(ss)) return -1;
        float inv = (float)(1.0 / sqrt(ss));
        for (int d = 0; d < D; d++) out[(size_t)r * D + d] = x[(size_t)r * D + d] * inv;
        if (norms) norms[r] = (float)sqrt(ss);
    }
    return 0;
}

/* Per-example clipped gradients of the batch, summed into g->sum. */
static int add_clipped(vf_text_grad_guard *g, const vf_guard_batch *ls, const float *text, float logit_scale,
                       vf_error *err) {
    const int C = g->C, D = g->D, B = ls->B;
    const double s = exp((double)logit_scale);
    if (unit_rows(g->unit_text, g->text_norm, text, C, D) || unit_rows(g->unit_image, NULL, ls->image, B, D))
        return vf_fail(err, "text gradient guard: a zero-norm text feature or image embedding");
    for (int b = 0; b < B; b++) {
        const float *logit = ls->logits + (size_t)b * C;   // (C) s * cos
        float *w = g->weight + (size_t)b * C;               // (C)
        double maxv = logit[0], z = 0, norm2 = 0;
        for (int c = 1; c < C; c++) maxv = logit[c] > maxv ? logit[c] : maxv;
        for (int c = 0; c < C; c++) z += exp(logit[c] - maxv);
        for (int c = 0; c < C; c++) {
            double p = exp(logit[c] - maxv) / z, cosv = logit[c] / s;
            double coef = s * (p - (c == ls->labels[b])) / g->text_norm[c];
            double tangent2 = 1 - cosv * cosv;
            norm2 += coef * coef * (tangent2 > 0 ? tangent2 : 0);
            w[c] = (float)coef;
        }
        double norm = sqrt(norm2), f = norm > g->p.clip ? g->p.clip / norm : 1.0;
        if (f < 1) g->clipped++;
        for (int c = 0; c < C; c++) w[c] = (float)(w[c] * f);
    }
    for (int c = 0; c < C; c++) {
        float *row = g->sum + (size_t)c * D;        // (D)
        const float *v = g->unit_text + (size_t)c * D;
        double along = 0;                            // sum_b w_bc <u_b, v_c>
        for (int b = 0; b < B; b++) {
            float w = g->weight[(size_t)b * C + c];
            const float *u = g->unit_image + (size_t)b * D;
            for (int d = 0; d < D; d++) row[d] += w * u[d];
            along += (double)w * (ls->logits[(size_t)b * C + c] / s);
        }
        for (int d = 0; d < D; d++) row[d] -= (float)along * v[d];
    }
    return 0;
}

int vf_text_grad_guard_add(vf_text_grad_guard *g, const vf_guard_batch *b, const float *text, float logit_scale,
                           const float *dtext_batch, vf_error *err) {
    const int B = b->B;
    if (B < 1 || B > g->B_max) return vf_fail(err, "text gradient guard: batch of %d (1..%d)", B, g->B_max);
    if (g->p.clip > 0) {
        if (add_clipped(g, b, text, logit_scale, err)) return -1;
    } else {
        for (long i = 0; i < (long)g->C * g->D; i++) g->sum[i] += dtext_batch[i];
    }
    g->examples += B;
    g->batches++;
    return 0;
}

int vf_text_grad_guard_add_share(vf_text_grad_guard *g, const float *share, int B, vf_error *err) {
    if (B < 1 || B > g->B_max) return vf_fail(err, "text gradient guard: batch of %d (1..%d)", B, g->B_max);
    for (long i = 0; i < (long)g->C * g->D; i++) g->sum[i] += share[i];
    g->examples += B;
    g->batches++;
    return 0;
}

void vf_text_grad_guard_release(vf_text_grad_guard *g, uint64_t seed, uint64_t step, float *dtext) {
    const long n = (long)g->C * g->D;
    memcpy(dtext, g->sum, (size_t)n * sizeof(float));
    if (g->p.clip > 0) {
        if (g->p.noise_multiplier > 0)
            vf_gauss_add(seed, VF_NOISE_TEXT_GRAD, step, g->p.noise_multiplier * g->p.clip, dtext, n);
        float inv = 1.0f / (float)(g->examples > 0 ? g->examples : 1);
        for (long i = 0; i < n; i++) dtext[i] *= inv;
    } else {
        float inv = 1.0f / (float)(g->batches > 0 ? g->batches : 1);
        for (long i = 0; i < n; i++) dtext[i] *= inv;
    }
}
