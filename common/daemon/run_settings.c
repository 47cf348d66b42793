/* run_settings: run_settings.json (see run_settings.h). */
#include "daemon/run_settings.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void add_str(cJSON *o, const char *k, const char *v) {
    if (v && *v) cJSON_AddStringToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

/* Seeds and step counts are integers up to 2^62: as JSON numbers (doubles)
 * they would lose digits, so they are written as decimal text when large. */
static void add_u64(cJSON *o, const char *k, unsigned long long v) {
    if (v < (1ULL << 53)) {
        cJSON_AddNumberToObject(o, k, (double)v);
    } else {
        char t[32];
        snprintf(t, sizeof t, "%llu", v);
        cJSON_AddStringToObject(o, k, t);
    }
}

int vf_run_settings_write(const char *dir, const vf_run_settings *s, vf_error *err) {
    const vf_run_config *c = s->cfg;
    char path[4400];
    snprintf(path, sizeof path, "%s/run_settings.json", dir);
    cJSON *o = cJSON_CreateObject();
    if (!o) return vf_fail(err, "%s: out of memory", path);
    cJSON_AddStringToObject(o, "format", "vflclip-run-settings-1");
    add_str(o, "program", s->program);
    cJSON_AddStringToObject(o, "software_version", VF_SOFTWARE_VERSION);
    add_str(o, "run_id", s->run_id);
    cJSON_AddNumberToObject(o, "written_unix", (double)time(NULL));
    cJSON *r = cJSON_AddObjectToObject(o, "run");
    cJSON_AddNumberToObject(r, "epochs", c->epochs);
    cJSON_AddNumberToObject(r, "batch_size", c->batch_size);
    add_u64(r, "max_steps", (unsigned long long)c->max_steps);
    add_u64(r, "seed", c->seed);
    cJSON_AddStringToObject(r, "optimizer", vf_optim_kind_name(c->optim.kind));
    cJSON_AddNumberToObject(r, "lr", c->schedule.base_lr);
    cJSON_AddNumberToObject(r, "momentum", c->optim.momentum);
    cJSON_AddNumberToObject(r, "weight_decay", c->optim.weight_decay);
    cJSON_AddNumberToObject(r, "warmup_epochs", c->schedule.warmup_epochs);
    cJSON_AddStringToObject(r, "warmup", c->schedule.warmup == VF_WARMUP_LINEAR     ? "linear"
                                         : c->schedule.warmup == VF_WARMUP_CONSTANT ? "constant"
                                                                                    : "none");
    cJSON_AddNumberToObject(r, "warmup_lr", c->schedule.warmup_lr);
    cJSON_AddNumberToObject(r, "n_ctx", c->n_ctx);
    add_str(r, "template", c->template_[0] ? c->template_ : s->template_);
    add_str(r, "init_words", c->init_words);
    cJSON_AddBoolToObject(r, "csc", c->csc);
    cJSON_AddStringToObject(r, "class_pos", vf_class_pos_name(c->class_pos));
    cJSON *ip = cJSON_AddArrayToObject(r, "image_parties");
    for (int i = 0; i < c->n_parties; i++) cJSON_AddItemToArray(ip, cJSON_CreateString(c->parties[i]));
    cJSON_AddNumberToObject(r, "party_timeout_s", c->party_timeout_s);
    cJSON_AddNumberToObject(r, "checkpoint_every", c->checkpoint_every);
    cJSON_AddNumberToObject(r, "chunk_size", c->chunk_size);
    cJSON_AddNumberToObject(r, "text_grad_accumulate", c->privacy.accumulate);
    cJSON_AddNumberToObject(r, "text_grad_clip", c->privacy.clip);
    cJSON_AddNumberToObject(r, "text_grad_noise", c->privacy.noise_multiplier);
    cJSON_AddNumberToObject(r, "dp_delta", c->privacy.delta);
    cJSON_AddNumberToObject(r, "epsilon_budget", c->privacy.epsilon_budget);
    cJSON_AddStringToObject(r, "share_classifier", c->share_classifier ? "image-parties" : "none");
    cJSON_AddBoolToObject(r, "fit_temperature", c->fit_temperature);
    cJSON_AddStringToObject(r, "loss_at", c->loss_at_parties ? "image-parties" : "aggregator");
    cJSON_AddStringToObject(r, "warm_start", c->warm_start);
    cJSON *seeds = cJSON_AddObjectToObject(o, "seeds");
    add_u64(seeds, "seed", c->seed);
    add_u64(seeds, "split_seed", s->split_seed);
    add_str(o, "model_fingerprint", s->model_fingerprint);
    add_str(o, "tokenizer_fingerprint", s->tokenizer_fingerprint);
    add_str(o, "preprocessing_fingerprint", s->preprocessing_fingerprint);
    add_str(o, "knowledge_party", s->knowledge_party);
    cJSON *parties = cJSON_AddArrayToObject(o, "image_parties");
    for (int i = 0; i < c->n_parties; i++) cJSON_AddItemToArray(parties, cJSON_CreateString(c->parties[i]));
    add_str(o, "data", s->data);
    if (s->class_names) {
        cJSON *names = cJSON_AddArrayToObject(o, "class_names");
        for (int k = 0; k < s->n_classes; k++) cJSON_AddItemToArray(names, cJSON_CreateString(s->class_names[k]));
    }
    add_str(o, "config_text", s->config_text);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return vf_fail(err, "%s: out of memory", path);
    size_t len = strlen(text);
    text[len] = '\n';
    int rc = vf_write_atomic(path, text, len + 1, err);
    free(text);
    return rc;
}
