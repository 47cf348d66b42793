/* vflclip-knowledge-party: the daemon of the dermatology centre that owns the
 * class names, the prompt template, the frozen CLIP text tower and the
 * learnable CoOp context.  It dials the aggregator (daemon/party_link.h) and
 * answers its tasks with the trainer library's functions:
 *   RunSetup      build the prompt learner + optimizer (or restore a
 *                 checkpoint)      -> TextReady, TextFeatures
 *   TextBackward  vf_context_learner_update, then the next forward -> TextFeatures
 *   Checkpoint    SAVE | MARK_BEST | RESTORE_BEST | EXPORT
 * No weight and no context vector leaves except the final learned context
 * (export), which is the run's result. */
#include "coop/classifier.h"
#include "daemon/peer_limits.h"
#include "data/dataset.h"
#include "util/name_list.h"
#include "daemon/daemon_setup.h"
#include "kp.h"
#include "util/fileio.h"
#include "util/log.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PROGRAM "vflclip-knowledge-party"

static const vf_ini_key schema[] = {
    VF_INI_TLS_KEYS,
    VF_INI_DIAL_KEYS,
    {"model", "dir", VF_INI_PATH, 1, NULL, "CLIP checkpoint directory; the text tower and tokenizer are used"},
    {"model", "tokenizer", VF_INI_PATH, 0, NULL,
     "vocab.json + merges.txt directory or bpe_simple_vocab_16e6.txt.gz (default: those in [model] dir)"},
    {"prompt", "classes", VF_INI_STR, 0, NULL, "class names in label order, comma-separated (default: the 7 DermaMNIST names)"},
    {"prompt", "template", VF_INI_STR, 0, VF_COOP_DEFAULT_TEMPLATE, "prompt template with {ctx} and {class} (a run may override it)"},
    VF_INI_STATE_KEYS,
    {NULL, NULL, 0, 0, NULL, NULL},
};

static kp_state g_kp;
static vf_party_link *g_link;

/* ---- run set-up ------------------------------------------------------------ */
void kp_free_run(kp_state *k) {
    vf_context_learner_free(&k->learner);
    if (k->coop) vf_coop_free(k->coop);
    k->coop = NULL;
    k->run_id[0] = 0;
}

int kp_setup_run(kp_state *k, const Vflclip__V1__RunSetup *rs, vf_error *err) {
    kp_free_run(k);
    if (!rs->run_id[0] || strchr(rs->run_id, '/') || rs->run_id[0] == '.')
        return vf_fail(err, "run id '%s' is not a plain name", rs->run_id);
    snprintf(k->run_id, sizeof k->run_id, "%s", rs->run_id);
    snprintf(k->run_dir, sizeof k->run_dir, "%s/runs/%s", k->state_dir, rs->run_id);
    if (vf_mkdirs(k->run_dir, 0700, err)) return -1;
    snprintf(k->template_, sizeof k->template_, "%s", rs->template_[0] ? rs->template_ : k->default_template);
    snprintf(k->init_words, sizeof k->init_words, "%s", rs->init_words);
    vf_coop_config cc = vf_coop_config_default();
    cc.n_ctx = (int)rs->n_ctx;
    cc.csc = rs->csc;
    if (vf_class_pos_parse(rs->class_pos[0] ? rs->class_pos : "end", &cc.class_pos, err)) return -1;
    cc.template_ = k->template_;
    cc.init_words = k->init_words[0] ? k->init_words : NULL;
    /* With init words, n_ctx is their token count (CoOp); an n_ctx the run
     * stated that says otherwise is refused (prompt.h). */
    cc.n_ctx_given = rs->n_ctx_given;
    cc.seed = rs->seed;
    k->coop_cfg = cc;
    k->seed = rs->seed;
    if (vf_coop_create(&k->coop, &cc, &k->tower.w, k->tok, (const char *const *)k->class_names, k->n_classes, err))
        return vf_error_prefix(err, "RunSetup of run %s", k->run_id);
    if (cc.init_words && (uint32_t)vf_coop_n_ctx(k->coop) != rs->n_ctx)
        vf_log(VF_INFO, "event=n_ctx_from_init_words run=%s n_ctx=%d requested=%u init_words=\"%s\"", k->run_id,
               vf_coop_n_ctx(k->coop), rs->n_ctx, cc.init_words);
    vf_optim_kind kind;
    if (vf_optim_kind_parse(rs->optimizer[0] ? rs->optimizer : "adam", &kind, err)) return -1;
    vf_optim_config oc = vf_optim_defaults(kind);
    oc.momentum = rs->momentum;
    oc.weight_decay = rs->weight_decay;
    if (rs->beta1 > 0) oc.beta1 = rs->beta1;
    if (rs->beta2 > 0) oc.beta2 = rs->beta2;
    if (rs->eps > 0) oc.eps = rs->eps;
    if (vf_context_learner_init(&k->learner, k->coop, &oc, err)) return -1;
    if (rs->resume_step > 0 && kp_checkpoint_load(k, rs->resume_step, err)) return -1;
    if (rs->resume_step == 0 && rs->warm_start_run[0] && kp_warm_start(k, rs->warm_start_run, &oc, err)) return -1;
    vf_log(VF_INFO, "event=run_setup run=%s step=%" PRIu64 " classes=%d ctx_rows=%d width=%d optimizer=%s template=\"%s\"",
           k->run_id, rs->resume_step, k->n_classes, vf_coop_ctx_rows(k->coop), vf_coop_width(k->coop),
           vf_optim_kind_name(kind), k->template_);
    return 0;
}

/* ---- answers ---------------------------------------------------------------- */
static void send_pm(Vflclip__V1__PartyMessage *pm) {
    vf_error err;
    if (vf_party_link_send(g_link, pm, &err)) vf_log(VF_WARN, "event=send_failed task=%" PRIu64 " error=\"%s\"", pm->task_id, err.msg);
}

static void send_error(uint64_t task, int code, const char *msg) {
    vf_log(VF_WARN, "event=task_failed run=%s task=%" PRIu64 " error=\"%s\"", g_kp.run_id[0] ? g_kp.run_id : "-", task, msg);
    Vflclip__V1__Error e = VFLCLIP__V1__ERROR__INIT;
    e.code = code;
    e.message = (char *)msg;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.task_id = task;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR;
    pm.error = &e;
    send_pm(&pm);
}

static void send_ack(uint64_t task, const char *detail) {
    Vflclip__V1__Ack a = VFLCLIP__V1__ACK__INIT;
    a.detail = (char *)detail;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.task_id = task;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_ACK;
    pm.ack = &a;
    send_pm(&pm);
}

/* Forward of the current context, answered as TextFeatures (C, D). */
static int send_features(uint64_t task, uint64_t step, vf_error *err) {
    if (vf_context_learner_forward(&g_kp.learner, err)) return -1;   // (C, D)
    const int C = g_kp.n_classes, D = vf_coop_feature_dim(g_kp.coop);
    uint32_t shape[2] = {(uint32_t)C, (uint32_t)D};
    Vflclip__V1__Tensor t = VFLCLIP__V1__TENSOR__INIT;
    t.n_shape = 2;
    t.shape = shape;
    t.n_data = (size_t)C * D;
    t.data = g_kp.learner.text;
    Vflclip__V1__TextFeatures tf = VFLCLIP__V1__TEXT_FEATURES__INIT;
    tf.step = step;
    tf.features = &t;
    tf.logit_scale = g_kp.tower.logit_scale;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.task_id = task;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_FEATURES;
    pm.text_features = &tf;
    send_pm(&pm);
    return 0;
}

static void on_run_setup(uint64_t task, const Vflclip__V1__RunSetup *rs) {
    vf_error err;
    if (kp_setup_run(&g_kp, rs, &err)) {
        send_error(task, VF_GRPC_FAILED_PRECONDITION, err.msg);
        kp_free_run(&g_kp);
        return;
    }
    Vflclip__V1__TextReady tr = VFLCLIP__V1__TEXT_READY__INIT;
    tr.n_classes = (uint32_t)g_kp.n_classes;
    tr.dim = (uint32_t)vf_coop_feature_dim(g_kp.coop);
    tr.ctx_rows = (uint32_t)vf_coop_ctx_rows(g_kp.coop);
    tr.ctx_width = (uint32_t)vf_coop_width(g_kp.coop);
    tr.n_class_names = (size_t)g_kp.n_classes;
    tr.class_names = g_kp.class_names;
    tr.step = rs->resume_step;
    tr.model_fingerprint = g_kp.fingerprint;
    tr.template_ = g_kp.template_;
    tr.n_ctx = (uint32_t)vf_coop_n_ctx(g_kp.coop);
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.task_id = task;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_READY;
    pm.text_ready = &tr;
    send_pm(&pm);
    if (send_features(task, rs->resume_step, &err)) send_error(task, VF_GRPC_INTERNAL, err.msg);
}

static void on_text_backward(uint64_t task, const Vflclip__V1__TextBackward *tb) {
    vf_error err;
    const int C = g_kp.n_classes, D = vf_coop_feature_dim(g_kp.coop);
    const Vflclip__V1__Tensor *g = tb->grad_text_features;
    if (!g || g->n_shape != 2 || g->shape[0] != (uint32_t)C || g->shape[1] != (uint32_t)D || g->n_data != (size_t)C * D) {
        char msg[256];
        snprintf(msg, sizeof msg, "TextBackward step %" PRIu64 ": dL/dT must be (%d, %d)", tb->step, C, D);
        send_error(task, VF_GRPC_INVALID_ARGUMENT, msg);
        return;
    }
    if (!isfinite(tb->learning_rate) || tb->learning_rate < 0) {
        send_error(task, VF_GRPC_INVALID_ARGUMENT, "TextBackward: learning rate is not a finite non-negative number");
        return;
    }
    for (size_t i = 0; i < g->n_data; i++)
        if (!isfinite(g->data[i])) {   /* found by fuzz_knowledge_party: a NaN reached the text tower's exp */
            char msg[160];
            snprintf(msg, sizeof msg, "TextBackward step %" PRIu64 ": dL/dT value %zu is not finite", tb->step, i);
            send_error(task, VF_GRPC_INVALID_ARGUMENT, msg);
            return;
        }
    if (vf_context_learner_update(&g_kp.learner, g->data, tb->learning_rate, &err) ||
        send_features(task, tb->step + 1, &err))
        send_error(task, VF_GRPC_INTERNAL, err.msg);
}

/* The run's classifier (coop/classifier.h) from the best context, already
 * restored: its normalised class text features and what describes them; no
 * context, no tower weight.  The aggregator adds the preprocessing
 * fingerprint, run id, calibration and metrics. */
static int export_classifier(const char *path, char **data, size_t *len, vf_error *err) {
    if (vf_context_learner_forward(&g_kp.learner, err)) return -1;
    vf_classifier k;
    if (vf_classifier_init(&k, g_kp.learner.text, g_kp.n_classes, vf_coop_feature_dim(g_kp.coop), g_kp.tower.logit_scale,
                           (const char *const *)g_kp.class_names, g_kp.template_, g_kp.fingerprint, NULL, g_kp.run_id,
                           NULL, err))
        return -1;
    int rc = vf_classifier_save(&k, path, err) || vf_read_file(path, data, len, err) ? -1 : 0;
    vf_classifier_free(&k);
    return rc;
}

/* EXPORT: the best context as a context file, sent whole, with the run's classifier. */
static void export_context(uint64_t task) {
    vf_error err;
    char path[4400];
    snprintf(path, sizeof path, "%s/context.safetensors", g_kp.run_dir);
    vf_context_info info = {.template_ = g_kp.template_, .init_words = g_kp.init_words[0] ? g_kp.init_words : NULL,
                            .class_names = (const char *const *)g_kp.class_names, .n_classes = g_kp.n_classes,
                            .n_ctx = vf_coop_n_ctx(g_kp.coop), .csc = g_kp.coop_cfg.csc,
                            .class_pos = g_kp.coop_cfg.class_pos, .model_fingerprint = g_kp.fingerprint,
                            .epoch = g_kp.learner.best_epoch, .val_auc = g_kp.learner.best_auc, .seed = g_kp.seed};
    char *data = NULL, *clf = NULL, clf_path[4400];
    size_t len = 0, clf_len = 0;
    snprintf(clf_path, sizeof clf_path, "%s/%s", g_kp.run_dir, VF_CLASSIFIER_FILE);
    if (vf_context_learner_restore_best(&g_kp.learner, &err) || vf_context_save(path, g_kp.coop, &info, &err) ||
        vf_read_file(path, &data, &len, &err) || export_classifier(clf_path, &clf, &clf_len, &err)) {
        free(data);
        send_error(task, VF_GRPC_INTERNAL, err.msg);
        return;
    }
    Vflclip__V1__ContextFile cf = VFLCLIP__V1__CONTEXT_FILE__INIT;
    cf.data.data = (uint8_t *)data;
    cf.data.len = len;
    cf.classifier.data = (uint8_t *)clf;
    cf.classifier.len = clf_len;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.task_id = task;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_CONTEXT_FILE;
    pm.context_file = &cf;
    send_pm(&pm);
    free(data);
    free(clf);
    vf_log(VF_INFO, "event=context_exported run=%s best_epoch=%d bytes=%zu classifier_bytes=%zu", g_kp.run_id,
           g_kp.learner.best_epoch, len, clf_len);
}

static void on_checkpoint(uint64_t task, const Vflclip__V1__Checkpoint *ck) {
    vf_error err;
    switch (ck->action) {
    case VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_SAVE:
        if (kp_checkpoint_save(&g_kp, ck->step, &err)) send_error(task, VF_GRPC_INTERNAL, err.msg);
        else send_ack(task, "saved");
        return;
    case VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_MARK_BEST:
        vf_context_learner_mark_best(&g_kp.learner, (int)ck->epoch, ck->val_auc);
        send_ack(task, "best");
        return;
    case VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_RESTORE_BEST:
        if (vf_context_learner_restore_best(&g_kp.learner, &err) || send_features(task, ck->step, &err))
            send_error(task, VF_GRPC_INTERNAL, err.msg);
        return;
    case VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_EXPORT: return export_context(task);
    default: {
        char msg[160];
        snprintf(msg, sizeof msg, "unknown checkpoint action %d", (int)ck->action);
        send_error(task, VF_GRPC_INVALID_ARGUMENT, msg);
    }
    }
}


static void on_message(vf_party_link *l, const Vflclip__V1__AggregatorMessage *m, void *ud) {
    uint64_t task = m->task_id;
    switch (m->body_case) {
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME: return;
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_RUN_SETUP: on_run_setup(task, m->run_setup); return;
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_SHUTDOWN:
        vf_log(VF_INFO, "event=run_closed run=%s reason=\"%s\"", g_kp.run_id[0] ? g_kp.run_id : "-", m->shutdown->reason);
        kp_free_run(&g_kp);
        return;
    default: break;
    }
    if (!g_kp.coop) {
        send_error(task, VF_GRPC_FAILED_PRECONDITION, "no run is set up on this knowledge party (RunSetup first)");
        return;
    }
    switch (m->body_case) {
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_TEXT_BACKWARD: on_text_backward(task, m->text_backward); break;
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_CHECKPOINT: on_checkpoint(task, m->checkpoint); break;
    default: send_error(task, VF_GRPC_UNIMPLEMENTED, "task not for a knowledge party"); break;
    }
}

static char g_tok_fingerprint[65];

static void fill_hello(Vflclip__V1__Hello *h, void *ud) {
    h->model_fingerprint = g_kp.fingerprint;
    h->tokenizer_fingerprint = g_tok_fingerprint;
    h->software_version = VF_VERSION;
    h->embed_dim = (uint32_t)g_kp.tower.cfg.projection_dim;
}

static void on_down(vf_party_link *l, const char *why, void *ud) {
    /* The aggregator re-sends RunSetup (with its last committed step) when the
     * link is back; nothing here survives a lost stream but the checkpoints. */
    kp_free_run(&g_kp);
}

static void on_stop(int sig) {
    vf_log(VF_INFO, "event=stopping signal=%d", sig);
    vf_party_link_stop(g_link);
}

/* [prompt] classes, else DermaMNIST's seven. */
static int parse_classes(const char *csv, vf_error *err) {
    vf_name_list l;
    if (vf_name_list_parse(&l, csv, "[prompt] classes", 2, err)) return -1;
    const int n = csv ? l.n : 7;
    const char *const *names = csv ? (const char *const *)l.names : vf_dermamnist_names;
    if (n > VF_PEER_MAX_CLASSES) {
        vf_name_list_free(&l);
        return vf_fail(err, "[prompt] classes: %d classes (at most %u)", n, VF_PEER_MAX_CLASSES);
    }
    g_kp.class_names = calloc((size_t)n, sizeof *g_kp.class_names);
    for (int i = 0; g_kp.class_names && i < n; i++) g_kp.class_names[i] = strdup(names[i]);
    g_kp.n_classes = n;
    vf_name_list_free(&l);
    return g_kp.class_names ? 0 : vf_fail(err, "out of memory");
}

static const vf_daemon_spec spec = {
    PROGRAM,
    "The knowledge party: class names, prompt template, CLIP text tower and the learnable CoOp\n"
    "context; dials the aggregator and answers its text tasks.",
    schema, 1};

/* [model] and [prompt]: the text tower, the tokenizer (and where it came from)
 * and the class names, with both fingerprints for the Hello. */
static int load_text_side(const vf_daemon *d, char model[4096], char tok_source[4200], vf_error *err) {
    char tokenizer[4096];
    if (vf_ini_path(&d->ini, "model", "dir", 1, model, 4096, err) ||
        vf_ini_path(&d->ini, "model", "tokenizer", vf_ini_given(&d->ini, "model", "tokenizer"), tokenizer,
                    sizeof tokenizer, err) ||
        parse_classes(vf_ini_get(&d->ini, "prompt", "classes"), err))
        return -1;
    snprintf(g_kp.default_template, sizeof g_kp.default_template, "%s", vf_ini_get(&d->ini, "prompt", "template"));
    snprintf(g_kp.state_dir, sizeof g_kp.state_dir, "%s", d->paths.state);
    if (vf_checkpoint_open(&g_kp.ck, model, err) || vf_clip_text_load_from(&g_kp.tower, &g_kp.ck, err) ||
        vf_checkpoint_tokenizer(&g_kp.ck, tokenizer[0] ? tokenizer : NULL, &g_kp.tok, tok_source, 4200, err) ||
        vf_tokenizer_fingerprint(g_kp.tok, g_tok_fingerprint, err))
        return -1;
    vf_fingerprint_hex(g_kp.tower.fingerprint, g_kp.fingerprint);
    if (g_kp.tower.cfg.random_weights)
        vf_log(VF_WARN, "event=random_weights model=%s detail=\"RANDOM weights: metrics mean nothing about dermatology\"", model);
    return 0;
}

int main(int argc, char **argv) {
    vf_daemon d;
    int rc = vf_daemon_start(&d, &spec, argc, argv);
    if (rc >= 0) return rc;
    vf_error err;
    char model[4096], tok_source[4200];
    if (load_text_side(&d, model, tok_source, &err)) return vf_daemon_fail(&d, &err);
    if (d.check_only) {
        printf("%s: configuration %s is valid (model %s, tokenizer %.16s from %s, %d classes)\n", PROGRAM, d.config,
               g_kp.fingerprint, g_tok_fingerprint, tok_source, g_kp.n_classes);
        vf_daemon_end(&d);
        return 0;
    }
    uv_loop_t *loop = uv_default_loop();
    vf_party_link_handlers h = {fill_hello, on_message, on_down, NULL, NULL};
    if (vf_party_link_start(loop, &d.link, &h, &g_link, &err)) return vf_daemon_fail(&d, &err);
    vf_log(VF_INFO, "event=started model=%s fingerprint=%.16s tokenizer=%s tokenizer_fingerprint=%.16s classes=%d "
           "aggregator=%s:%d", model, g_kp.fingerprint, tok_source, g_tok_fingerprint, g_kp.n_classes, d.host,
           d.link.client.port);
    vf_daemon_run(&d, loop, "text tower loaded; dialling the aggregator", on_stop);
    kp_free_run(&g_kp);
    vf_tokenizer_free(g_kp.tok);
    vf_clip_text_free(&g_kp.tower);
    vf_checkpoint_close(&g_kp.ck);   /* after the tower that borrowed it */
    vf_daemon_end(&d);
    return 0;
}
