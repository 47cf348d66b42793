/* embed_dp: differential privacy on the image embeddings an image party
 * releases to the aggregator.  Each embedding row is scaled to L2 norm <=
 * clip and then gets Gaussian noise of standard deviation noise * clip on
 * every coordinate, seeded by (party seed, split, the example's index in the
 * split), so the same example always gets the same noise whatever the chunk
 * size or however often it is asked for.  One example's row is released once
 * per split: the Gaussian mechanism without subsampling, epsilon from the RDP
 * accountant at q = 1 and one step.  Replacing one example changes its row by
 * up to 2 * clip; the (epsilon, delta) reported is for adding/removing one
 * example (sensitivity clip), as DP-SGD reports. */
#ifndef VF_PRIVACY_EMBED_DP_H
#define VF_PRIVACY_EMBED_DP_H

#include <stdint.h>
#include "util/vf_error.h"

typedef struct vf_embed_privacy {
    float clip;               /* L2 bound of a row; 0 = off */
    float noise_multiplier;   /* noise std / clip */
    uint64_t seed;
    double delta;
} vf_embed_privacy;

int vf_embed_privacy_check(const vf_embed_privacy *p, const char *what, vf_error *err);
/* Clips and noises rows emb (count, D) of split `split` (0 train, 1 val, 2 test)
 * starting at example `first` of the split. */
void vf_embed_privatize(const vf_embed_privacy *p, int split, uint64_t first, float *emb, int count, int D);
/* Epsilon at p->delta of one release; +inf without noise, 0 when off. */
double vf_embed_epsilon(const vf_embed_privacy *p);

#endif
