/* peer_limits: bounds on what a peer declares (see peer_limits.h). */
#include "daemon/peer_limits.h"
#include "data/dataset.h"

#include <string.h>

static int bad_char(unsigned char c) { return c < 0x20 || c == 0x7f || c == '"' || c == '\\'; }

int vf_peer_check_name(const char *what, const char *s, vf_error *err) {
    if (!s) return 0;
    size_t n = strnlen(s, VF_PEER_MAX_STRING + 1);
    if (n > VF_PEER_MAX_STRING) return vf_fail(err, "%s is longer than %u bytes", what, VF_PEER_MAX_STRING);
    for (size_t i = 0; i < n; i++)
        if (bad_char((unsigned char)s[i]))
            return vf_fail(err, "%s has a control character, quote or backslash at byte %zu", what, i);
    return 0;
}

void vf_peer_sanitize_text(char *s) {
    if (!s) return;
    size_t n = strnlen(s, VF_PEER_MAX_TEXT);
    s[n] = 0;
    for (size_t i = 0; i < n; i++)
        if (bad_char((unsigned char)s[i])) s[i] = '?';
}

int vf_size_mul3(size_t a, size_t b, size_t c, size_t *total, vf_error *err) {
    size_t ab;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, total))
        return vf_fail(err, "%zu x %zu x %zu does not fit in memory sizes", a, b, c);
    return 0;
}

int vf_peer_check_hello(const Vflclip__V1__Hello *h, uint64_t split_n[3], vf_error *err) {
    if (vf_peer_check_name("Hello name", h->name, err) || vf_peer_check_name("model_fingerprint", h->model_fingerprint, err) ||
        vf_peer_check_name("preprocessing_fingerprint", h->preprocessing_fingerprint, err) ||
        vf_peer_check_name("tokenizer_fingerprint", h->tokenizer_fingerprint, err) ||
        vf_peer_check_name("software_version", h->software_version, err))
        return -1;
    if (h->embed_dim > VF_PEER_MAX_DIM) return vf_fail(err, "embed_dim %u is over the limit of %u", h->embed_dim, VF_PEER_MAX_DIM);
    if (h->n_splits > 3) return vf_fail(err, "%zu split sizes (at most train, val and test)", h->n_splits);
    int seen[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) split_n[k] = 0;
    for (size_t i = 0; i < h->n_splits; i++) {
        const Vflclip__V1__SplitSize *s = h->splits[i];
        if (vf_peer_check_name("split name", s->split, err)) return -1;
        vf_split k;
        if (vf_split_parse(s->split, &k)) return vf_fail(err, "unknown split '%s' (train, val or test)", s->split);
        if (seen[k]++) return vf_fail(err, "split '%s' is declared twice", s->split);
        if (s->count > VF_PEER_MAX_SPLIT_EXAMPLES)
            return vf_fail(err, "split '%s' declares %llu examples, over the limit of %u", s->split,
                           (unsigned long long)s->count, VF_PEER_MAX_SPLIT_EXAMPLES);
        split_n[k] = s->count;
    }
    if (!(h->embed_clip >= 0) || !(h->embed_noise_multiplier >= 0) || !(h->dp_delta >= 0 && h->dp_delta < 1))
        return vf_fail(err, "embedding privacy settings (clip %g, noise %g, delta %g) are not valid", h->embed_clip,
                       h->embed_noise_multiplier, h->dp_delta);
    if ((h->mask_public_key.len != 0 && h->mask_public_key.len != VF_PEER_MASK_PUB) ||
        h->mask_key_signature.len > VF_PEER_MAX_MASK_SIG || h->certificate.len > VF_PEER_MAX_CERT)
        return vf_fail(err, "mask key of %zu bytes (%u), signature of %zu (at most %u), certificate of %zu (at most %u)",
                       h->mask_public_key.len, VF_PEER_MASK_PUB, h->mask_key_signature.len, VF_PEER_MAX_MASK_SIG,
                       h->certificate.len, VF_PEER_MAX_CERT);
    return 0;
}

int vf_peer_check_masked_share(const Vflclip__V1__MaskedShare *ms, size_t want_len, vf_error *err) {
    if (ms->n_values != want_len) return vf_fail(err, "masked share of %zu words; the sum has %zu", ms->n_values, want_len);
    if (ms->site_metrics_json && strlen(ms->site_metrics_json) > VF_PEER_MAX_SITE_JSON)
        return vf_fail(err, "site metrics of %zu bytes (at most %u)", strlen(ms->site_metrics_json), VF_PEER_MAX_SITE_JSON);
    return 0;
}

int vf_peer_check_chunk(const Vflclip__V1__EmbeddingsChunk *ch, vf_error *err) {
    if (vf_peer_check_name("chunk split name", ch->split, err)) return -1;
    if (ch->count == 0 || ch->count > VF_PEER_MAX_CHUNK)
        return vf_fail(err, "chunk of %u examples (1..%u allowed)", ch->count, VF_PEER_MAX_CHUNK);
    if (ch->dim == 0 || ch->dim > VF_PEER_MAX_DIM) return vf_fail(err, "chunk of %u-dim embeddings (1..%u allowed)", ch->dim, VF_PEER_MAX_DIM);
    if (ch->n_data != (size_t)ch->count * ch->dim || ch->n_labels != ch->count || ch->n_ids != ch->count)
        return vf_fail(err, "chunk of %u examples carries %zu floats, %zu labels, %zu ids", ch->count, ch->n_data,
                       ch->n_labels, ch->n_ids);
    if (ch->offset > VF_PEER_MAX_SPLIT_EXAMPLES || ch->total > VF_PEER_MAX_SPLIT_EXAMPLES)
        return vf_fail(err, "chunk offset %llu / total %llu is over the limit of %u", (unsigned long long)ch->offset,
                       (unsigned long long)ch->total, VF_PEER_MAX_SPLIT_EXAMPLES);
    for (size_t i = 0; i < ch->n_ids; i++)
        if (vf_peer_check_name("example id", ch->ids[i], err)) return -1;
    return 0;
}

int vf_peer_check_text_ready(const Vflclip__V1__TextReady *tr, vf_error *err) {
    if (tr->n_classes < 2 || tr->n_classes > VF_PEER_MAX_CLASSES || tr->n_class_names != tr->n_classes)
        return vf_fail(err, "%u classes and %zu names (2..%u classes allowed)", tr->n_classes, tr->n_class_names,
                       VF_PEER_MAX_CLASSES);
    if (tr->dim == 0 || tr->dim > VF_PEER_MAX_DIM) return vf_fail(err, "text features of width %u (1..%u allowed)", tr->dim, VF_PEER_MAX_DIM);
    for (size_t c = 0; c < tr->n_class_names; c++)
        if (vf_peer_check_name("class name", tr->class_names[c], err)) return -1;
    if (vf_peer_check_name("model_fingerprint", tr->model_fingerprint, err)) return -1;
    if (tr->template_ && strnlen(tr->template_, VF_PEER_MAX_TEXT + 1) > VF_PEER_MAX_TEXT)
        return vf_fail(err, "template is longer than %u bytes", VF_PEER_MAX_TEXT);
    return 0;
}

int vf_peer_check_progress(const Vflclip__V1__EncodingProgress *p, vf_error *err) {
    const uint64_t max = 3ull * VF_PEER_MAX_SPLIT_EXAMPLES;   /* train, val and test */
    if (p->total > max || p->done > p->total)
        return vf_fail(err, "encoding progress %llu of %llu images (done <= total <= %llu allowed)", (unsigned long long)p->done,
                       (unsigned long long)p->total, (unsigned long long)max);
    if (vf_peer_check_name("progress split name", p->split, err)) return -1;
    if (p->split && p->split[0] && strcmp(p->split, "train") && strcmp(p->split, "val") && strcmp(p->split, "test"))
        return vf_fail(err, "encoding progress of unknown split '%s'", p->split);
    if (!(p->images_per_s >= 0 && p->images_per_s <= 1e9) || !(p->eta_s >= -1 && p->eta_s <= 1e9))
        return vf_fail(err, "encoding progress rate %g images/s, %g s left are not valid", p->images_per_s, p->eta_s);
    return 0;
}

int vf_peer_check_classifier(size_t len, unsigned C, unsigned D, vf_error *err) {
    if (C == 0 || C > VF_PEER_MAX_CLASSES) C = VF_PEER_MAX_CLASSES;
    if (D == 0 || D > VF_PEER_MAX_DIM) D = VF_PEER_MAX_DIM;
    size_t max = (size_t)C * D * sizeof(float) + VF_PEER_MAX_CLASSIFIER_META;
    if (len == 0 || len > max)
        return vf_fail(err, "classifier file of %zu bytes (1 to %zu allowed for %u classes x %u features)", len, max, C, D);
    return 0;
}
