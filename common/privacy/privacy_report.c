/* privacy_report: privacy.json (see privacy_report.h). */
#include "privacy/privacy_report.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double vf_privacy_report_epsilon(const vf_privacy_report *r) {
    return vf_text_grad_epsilon(&r->text, r->batch, r->n_train, r->steps);
}

static void add_number_or_null(cJSON *o, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

const char *vf_loss_at_note(int loss_at_parties, int participants) {
    if (!loss_at_parties)
        return "the aggregator receives every image embedding and label (the paper's way); it must be trusted with them";
    if (participants == 1)
        return "a single image party: each secure sum is that party's own loss, dL/dT and counts; no protection against "
               "the aggregator";
    return "the aggregator receives only secure sums over the image parties: no embedding, label, score or single "
           "party's gradient";
}

int vf_privacy_report_write(const char *dir, const vf_privacy_report *r, vf_error *err) {
    cJSON *root = cJSON_CreateObject(), *t = cJSON_AddObjectToObject(root, "text_grad"),
          *e = cJSON_AddArrayToObject(root, "embeddings");
    cJSON_AddNumberToObject(t, "accumulate", r->text.accumulate);
    cJSON_AddNumberToObject(t, "clip", r->text.clip);
    cJSON_AddNumberToObject(t, "noise_multiplier", r->text.noise_multiplier);
    double q = r->n_train > 0 ? (double)r->batch * r->text.accumulate / r->n_train : 0;
    cJSON_AddNumberToObject(t, "sampling_rate", q > 1 ? 1 : q);
    cJSON_AddNumberToObject(t, "steps", (double)r->steps);
    cJSON_AddNumberToObject(t, "delta", r->text.delta);
    add_number_or_null(t, "epsilon", vf_privacy_report_epsilon(r));   /* null: no noise, no guarantee */
    cJSON_AddNumberToObject(t, "epsilon_budget", r->text.epsilon_budget);
    cJSON_AddBoolToObject(t, "budget_stop", r->budget_stop);
    cJSON_AddStringToObject(t, "accountant", "RDP of the Poisson-subsampled Gaussian, integer orders 2..64,128,256,512,1024");
    cJSON *la = cJSON_AddObjectToObject(root, "loss_at");
    cJSON_AddStringToObject(la, "mode", r->loss_at_parties ? "image-parties" : "aggregator");
    if (r->loss_at_parties) {
        cJSON_AddNumberToObject(la, "fewest_participants", r->sum_participants);
        cJSON_AddBoolToObject(la, "protects_against_aggregator", r->sum_participants > 1);
    }
    cJSON_AddStringToObject(la, "note", vf_loss_at_note(r->loss_at_parties, r->sum_participants));
    for (int i = 0; i < r->n_embed; i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "party", r->embed[i].party);
        cJSON_AddNumberToObject(p, "clip", r->embed[i].clip);
        cJSON_AddNumberToObject(p, "noise_multiplier", r->embed[i].noise_multiplier);
        cJSON_AddNumberToObject(p, "delta", r->embed[i].delta);
        add_number_or_null(p, "epsilon", r->embed[i].epsilon);
        cJSON_AddItemToArray(e, p);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return vf_fail(err, "%s/privacy.json: out of memory", dir);
    char path[4400];
    snprintf(path, sizeof path, "%s/privacy.json", dir);
    size_t n = strlen(text);
    text[n] = '\n';
    int rc = vf_write_atomic(path, text, n + 1, err);
    free(text);
    return rc;
}
