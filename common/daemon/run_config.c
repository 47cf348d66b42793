/* run_config: the [run] schema and its parser (see run_config.h). */
#include "util/name_list.h"
#include "daemon/run_config.h"

#include <string.h>

const vf_ini_key vf_run_config_schema[] = {
    {"run", "epochs", VF_INI_INT, 0, "10", "training epochs"},
    {"run", "batch_size", VF_INI_INT, 0, "32", "images per step, drawn across all image parties"},
    {"run", "max_steps", VF_INI_INT, 0, "0", "stop after this many optimizer steps in total (0: no limit)"},
    {"run", "seed", VF_INI_INT, 0, "1", "seed of the batch order and the random context initialisation"},
    {"run", "optimizer", VF_INI_STR, 0, "adam", "adam | sgd"},
    {"run", "lr", VF_INI_FLOAT, 0, NULL, "base learning rate (default 1e-3 for adam, 2e-3 for sgd)"},
    {"run", "momentum", VF_INI_FLOAT, 0, "0.9", "SGD momentum"},
    {"run", "weight_decay", VF_INI_FLOAT, 0, "0", "L2 weight decay"},
    {"run", "warmup_epochs", VF_INI_INT, 0, "0", "warm-up epochs"},
    {"run", "warmup", VF_INI_STR, 0, "constant", "warm-up kind: constant | linear"},
    {"run", "warmup_lr", VF_INI_FLOAT, 0, "1e-5", "warm-up learning rate"},
    {"run", "n_ctx", VF_INI_INT, 0, "16", "learnable context vectors per prompt"},
    {"run", "template", VF_INI_STR, 0, NULL, "prompt template with {ctx} and {class} (default: the knowledge party's)"},
    {"run", "init_words", VF_INI_STR, 0, NULL, "initialise the context from these words (n_ctx = their token count)"},
    {"run", "csc", VF_INI_BOOL, 0, "false", "class-specific contexts"},
    {"run", "class_pos", VF_INI_STR, 0, "end", "class token position: end | middle | front"},
    {"run", "image_parties", VF_INI_STR, 0, NULL,
     "comma-separated image-party names, in the order their data is concatenated (default: all connected, by name)"},
    {"run", "party_timeout_s", VF_INI_INT, 0, "300", "how long the run pauses for a missing party before it fails"},
    {"run", "checkpoint_every", VF_INI_INT, 0, "10", "optimizer steps between durable checkpoints (and at every epoch end)"},
    {"run", "chunk_size", VF_INI_INT, 0, "256", "embeddings per message from an image party"},
    {"run", "text_grad_accumulate", VF_INI_INT, 0, "1", "batches whose mean dL/dT makes one step (label-leak control)"},
    {"run", "text_grad_clip", VF_INI_FLOAT, 0, "0", "per-example L2 bound on dL/dT (0: no clipping)"},
    {"run", "text_grad_noise", VF_INI_FLOAT, 0, "0", "Gaussian noise on dL/dT, std = this * text_grad_clip"},
    {"run", "dp_delta", VF_INI_FLOAT, 0, "1e-5", "delta of the (epsilon, delta) the run reports"},
    {"run", "epsilon_budget", VF_INI_FLOAT, 0, "0", "stop before dL/dT's epsilon would exceed this (0: no budget)"},
    {"run", "share_classifier", VF_INI_STR, 0, "none",
     "none | image-parties: after the run, send its classifier (class text features, no context) to each image party once"},
    {"run", "fit_temperature", VF_INI_BOOL, 0, "false", "fit the classifier's temperature on the val split (NLL); ECE before/after"},
    {"run", "warm_start", VF_INI_STR, 0, NULL,
     "id of an earlier run (done, aborted or failed): start from its best context, with a fresh optimizer"},
    {"run", "loss_at", VF_INI_STR, 0, "aggregator",
     "aggregator (the paper's way: image parties send embeddings and labels) | image-parties (they keep them; the "
     "aggregator receives only secure sums of loss, dL/dT and evaluation counts; docs/threat-model.md)"},
    {NULL, NULL, 0, 0, NULL, NULL},
};

static int parse_parties(vf_run_config *rc, const char *list, const char *name, vf_error *err) {
    vf_name_list l;
    if (vf_name_list_parse(&l, list, "[run] image_parties", 0, err)) return vf_error_prefix(err, "%s", name);
    int rc_ = 0;
    if (l.n > VF_RUN_MAX_PARTIES) rc_ = vf_fail(err, "%s: [run] image_parties: more than %d", name, VF_RUN_MAX_PARTIES);
    for (int i = 0; i < l.n && rc_ == 0; i++) {
        if (strlen(l.names[i]) >= sizeof rc->parties[0])
            rc_ = vf_fail(err, "%s: [run] image_parties: name '%s' too long", name, l.names[i]);
        else snprintf(rc->parties[rc->n_parties++], sizeof rc->parties[0], "%s", l.names[i]);
    }
    vf_name_list_free(&l);
    return rc_;
}

int vf_run_config_parse(const char *text, const char *name, vf_run_config *rc, vf_error *err) {
    memset(rc, 0, sizeof *rc);
    vf_ini ini;
    if (vf_ini_load_string(&ini, text, name, NULL, vf_run_config_schema, err)) return -1;
    long v;
    double d;
    int rc_ = -1;
    const char *s;
    vf_optim_kind kind;
#define INT(key, lo, hi, dst) do { if (vf_ini_int(&ini, "run", key, lo, hi, &v, err)) goto out; dst = v; } while (0)
#define DBL(key, lo, hi, dst) do { if (vf_ini_double(&ini, "run", key, lo, hi, &d, err)) goto out; dst = (float)d; } while (0)
    INT("epochs", 1, 100000, rc->epochs);
    INT("batch_size", 1, 1 << 20, rc->batch_size);
    INT("max_steps", 0, 1L << 40, rc->max_steps);
    INT("seed", 0, 1L << 62, rc->seed);
    INT("n_ctx", 1, 72, rc->n_ctx);
    rc->n_ctx_given = vf_ini_given(&ini, "run", "n_ctx");
    INT("warmup_epochs", 0, 100000, rc->schedule.warmup_epochs);
    INT("party_timeout_s", 1, 7 * 86400, rc->party_timeout_s);
    INT("checkpoint_every", 1, 1 << 30, rc->checkpoint_every);
    INT("chunk_size", 1, 8192, rc->chunk_size);
    rc->privacy = vf_text_grad_privacy_default();
    INT("text_grad_accumulate", 1, 1 << 20, rc->privacy.accumulate);
    DBL("text_grad_clip", 0, 1e30, rc->privacy.clip);
    DBL("text_grad_noise", 0, 1e30, rc->privacy.noise_multiplier);
    if (vf_ini_double(&ini, "run", "dp_delta", 1e-300, 0.999999, &rc->privacy.delta, err)) goto out;
    if (vf_ini_double(&ini, "run", "epsilon_budget", 0, 1e30, &rc->privacy.epsilon_budget, err)) goto out;
    if (vf_text_grad_privacy_check(&rc->privacy, name, err)) goto out;
    if (vf_optim_kind_parse(vf_ini_get(&ini, "run", "optimizer"), &kind, err)) { vf_error_prefix(err, "%s: [run] optimizer", name); goto out; }
    rc->optim = vf_optim_defaults(kind);
    DBL("momentum", 0, 1, rc->optim.momentum);
    DBL("weight_decay", 0, 10, rc->optim.weight_decay);
    rc->schedule.base_lr = kind == VF_OPT_SGD ? 2e-3f : 1e-3f;
    if (vf_ini_given(&ini, "run", "lr")) DBL("lr", 0, 1e3, rc->schedule.base_lr);
    DBL("warmup_lr", 0, 1e3, rc->schedule.warmup_lr);
    rc->schedule.max_epochs = rc->epochs;
    if (vf_warmup_kind_parse(vf_ini_get(&ini, "run", "warmup"), &rc->schedule.warmup, err)) { vf_error_prefix(err, "%s: [run] warmup", name); goto out; }
    if (rc->schedule.warmup_epochs == 0) rc->schedule.warmup = VF_WARMUP_NONE;
    if (vf_ini_bool(&ini, "run", "csc", &rc->csc, err)) goto out;
    if (vf_class_pos_parse(vf_ini_get(&ini, "run", "class_pos"), &rc->class_pos, err)) { vf_error_prefix(err, "%s: [run] class_pos", name); goto out; }
    if ((s = vf_ini_get(&ini, "run", "template"))) {
        if (strlen(s) >= sizeof rc->template_) { vf_fail(err, "%s: [run] template is too long", name); goto out; }
        snprintf(rc->template_, sizeof rc->template_, "%s", s);
    }
    if ((s = vf_ini_get(&ini, "run", "init_words"))) {
        if (strlen(s) >= sizeof rc->init_words) { vf_fail(err, "%s: [run] init_words is too long", name); goto out; }
        snprintf(rc->init_words, sizeof rc->init_words, "%s", s);
    }
    if ((s = vf_ini_get(&ini, "run", "image_parties")) && parse_parties(rc, s, name, err)) goto out;
    s = vf_ini_get(&ini, "run", "share_classifier");
    if (!strcmp(s, "image-parties")) rc->share_classifier = 1;
    else if (strcmp(s, "none")) { vf_fail(err, "%s: [run] share_classifier '%s': want none or image-parties", name, s); goto out; }
    if (vf_ini_bool(&ini, "run", "fit_temperature", &rc->fit_temperature, err)) goto out;
    if ((s = vf_ini_get(&ini, "run", "warm_start"))) {
        if (!s[0] || strlen(s) >= sizeof rc->warm_start || strchr(s, '/') || s[0] == '.') {
            vf_fail(err, "%s: [run] warm_start '%s' is not a run id", name, s);
            goto out;
        }
        snprintf(rc->warm_start, sizeof rc->warm_start, "%s", s);
    }
    s = vf_ini_get(&ini, "run", "loss_at");
    if (!strcmp(s, "image-parties")) rc->loss_at_parties = 1;
    else if (strcmp(s, "aggregator")) { vf_fail(err, "%s: [run] loss_at '%s': want aggregator or image-parties", name, s); goto out; }
    if (rc->loss_at_parties && rc->fit_temperature) {
        vf_fail(err, "%s: [run] fit_temperature needs the val embeddings at the aggregator; with loss_at = image-parties "
                "it is not available", name);
        goto out;
    }
#undef INT
#undef DBL
    rc_ = 0;
out:
    vf_ini_free(&ini);
    return rc_;
}
