/* embed_dp: clipped, noised image embeddings (see embed_dp.h). */
#include "privacy/embed_dp.h"
#include "privacy/gauss.h"
#include "privacy/rdp.h"

#include <math.h>

int vf_embed_privacy_check(const vf_embed_privacy *p, const char *what, vf_error *err) {
    if (!(p->clip >= 0) || !isfinite(p->clip)) return vf_fail(err, "%s: embed_clip %g must be >= 0", what, p->clip);
    if (!(p->noise_multiplier >= 0) || !isfinite(p->noise_multiplier))
        return vf_fail(err, "%s: embed_noise %g must be >= 0", what, p->noise_multiplier);
    if (p->noise_multiplier > 0 && p->clip == 0)
        return vf_fail(err, "%s: embed_noise %g needs embed_clip > 0 (the noise is scaled to the clip bound)", what,
                       p->noise_multiplier);
    if (!(p->delta > 0 && p->delta < 1)) return vf_fail(err, "%s: dp_delta %g must be in (0, 1)", what, p->delta);
    return 0;
}

void vf_embed_privatize(const vf_embed_privacy *p, int split, uint64_t first, float *emb, int count, int D) {
    if (p->clip <= 0) return;
    for (int i = 0; i < count; i++) {
        float *row = emb + (size_t)i * D;   // (D)
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)row[d] * row[d];
        double norm = sqrt(ss);
        if (norm > p->clip) {
            float f = (float)(p->clip / norm);
            for (int d = 0; d < D; d++) row[d] *= f;
        }
        if (p->noise_multiplier > 0)
            vf_gauss_add(p->seed, VF_NOISE_EMBEDDING, ((uint64_t)split << 48) | (first + (uint64_t)i),
                         p->noise_multiplier * p->clip, row, D);
    }
}

double vf_embed_epsilon(const vf_embed_privacy *p) {
    if (p->clip <= 0) return 0;
    if (p->noise_multiplier <= 0) return INFINITY;
    return vf_rdp_epsilon(1.0, p->noise_multiplier, 1, p->delta);
}
