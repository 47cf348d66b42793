/* privacy_report: privacy.json in a run directory — what each mechanism was
 * set to and the epsilon spent, written atomically by `vflclip train` and by
 * the aggregator (after every step that changes it is not needed: it is
 * rewritten at each epoch end and at the end of the run). */
#ifndef VF_PRIVACY_REPORT_H
#define VF_PRIVACY_REPORT_H

#include "privacy/text_grad_guard.h"
#include "util/vf_error.h"

#define VF_PRIVACY_MAX_EMBED 64

typedef struct vf_privacy_embed_entry {
    char party[128];
    float clip, noise_multiplier;
    double delta, epsilon;
} vf_privacy_embed_entry;

typedef struct vf_privacy_report {
    vf_text_grad_privacy text;
    int batch, n_train;
    long steps;
    int budget_stop;
    int n_embed;
    vf_privacy_embed_entry embed[VF_PRIVACY_MAX_EMBED];
    /* [run] loss_at = image-parties: the aggregator saw only secure sums, each
     * over at least sum_participants image parties (0: none yet); with one,
     * the sum is that party's own values */
    int loss_at_parties, sum_participants;
} vf_privacy_report;

/* One line on what the aggregator sees (status and privacy.json). */
const char *vf_loss_at_note(int loss_at_parties, int participants);

/* The epsilon of the dL/dT releases so far (+inf without noise). */
double vf_privacy_report_epsilon(const vf_privacy_report *r);
/* Writes dir/privacy.json atomically. */
int vf_privacy_report_write(const char *dir, const vf_privacy_report *r, vf_error *err);

#endif
