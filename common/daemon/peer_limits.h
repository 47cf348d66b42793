/* peer_limits: the bounds on every size and string a peer puts in a
 * federation message, checked in one place before any of it reaches malloc,
 * memcpy or a log line.  A party is authenticated, not trusted: a hostile or
 * broken one may declare 2^64 examples or a class name full of newlines.
 *
 * Each check returns 0, or -1 with err saying which field and why; callers
 * refuse the message (or fail the run) naming the party.  The limits are far
 * above any real deployment (HAM10000 has 10,015 images, DermaMNIST 7
 * classes, the widest CLIP projection is 1024) and low enough that every
 * product of them fits a size_t and an int. */
#ifndef VF_DAEMON_PEER_LIMITS_H
#define VF_DAEMON_PEER_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#include "proto/federation.pb-c.h"
#include "util/vf_error.h"

#define VF_PEER_MAX_SPLIT_EXAMPLES (1u << 24)   /* examples one party holds in one split */
#define VF_PEER_MAX_DIM 8192u                   /* embedding / text-feature width */
#define VF_PEER_MAX_CLASSES 1024u
#define VF_PEER_MAX_CHUNK 8192u                 /* examples in one EmbeddingsChunk */
#define VF_PEER_MAX_STRING 256u                 /* names, ids, fingerprints, split names */
#define VF_PEER_MAX_TEXT 1024u                  /* free text: error messages, templates */
#define VF_PEER_MASK_PUB 32u                    /* an X25519 public key (secagg/mask_key.h) */
#define VF_PEER_MAX_MASK_SIG 160u               /* its signature */
#define VF_PEER_MAX_CERT 4096u                  /* a participant certificate, DER */
#define VF_PEER_MAX_SITE_JSON 65536u            /* a site's own metrics of one split */

/* A name, id or fingerprint: at most VF_PEER_MAX_STRING bytes, printable,
 * no quote or backslash (so it can stand in a key="value" log line as is). */
int vf_peer_check_name(const char *what, const char *s, vf_error *err);
/* Free text from a peer (an Error's message): cut to VF_PEER_MAX_TEXT and
 * every control character, quote or backslash replaced by '?', in place. */
void vf_peer_sanitize_text(char *s);

/* Hello: split names known and not repeated, counts and embed_dim bounded,
 * strings checked.  split_n[3] receives train/val/test counts (0 if absent). */
int vf_peer_check_hello(const Vflclip__V1__Hello *h, uint64_t split_n[3], vf_error *err);
/* EmbeddingsChunk: count, dim and the repeated fields' lengths agree and are
 * bounded; ids and the split name are checked. */
int vf_peer_check_chunk(const Vflclip__V1__EmbeddingsChunk *ch, vf_error *err);
/* MaskedShare: exactly the sum's length; site metrics bounded. */
int vf_peer_check_masked_share(const Vflclip__V1__MaskedShare *ms, size_t want_len, vf_error *err);
/* TextReady: class count, width and names bounded and checked. */
int vf_peer_check_text_ready(const Vflclip__V1__TextReady *tr, vf_error *err);

/* EncodingProgress: done <= total <= VF_PEER_MAX_SPLIT_EXAMPLES * 3 (all of
 * a party's splits), split name known, rate and time left finite and not
 * negative (eta -1: unknown). */
int vf_peer_check_progress(const Vflclip__V1__EncodingProgress *p, vf_error *err);

/* A classifier.safetensors from a peer (ContextFile.classifier,
 * ClassifierFile.data): not empty, and at most its C x D float32 features
 * plus VF_PEER_MAX_CLASSIFIER_META bytes of header (names, fingerprints,
 * metrics); C = 0 when the receiver does not know it (VF_PEER_MAX_CLASSES). */
#define VF_PEER_MAX_CLASSIFIER_META (1u << 20)
int vf_peer_check_classifier(size_t len, unsigned C, unsigned D, vf_error *err);

/* total = a * b * c without wrapping; -1 (and err) when it would. */
int vf_size_mul3(size_t a, size_t b, size_t c, size_t *total, vf_error *err);

#endif
