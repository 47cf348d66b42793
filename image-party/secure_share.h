/* secure_share: the image party's side of [run] loss_at = image-parties.
 * Its embeddings and labels stay here; for each SecureSumTask it computes
 * its part of the sum (coop/party_share.h), masks it with the pairwise masks
 * of every other participant (secagg/), and answers the masked vector.
 *
 * Before it masks, it checks what the aggregator relayed: each other
 * participant's key must be signed by that party's image-party certificate
 * under the federation CA, and the participants must include this party
 * with its own key of this connection; the sum_id must grow, so the
 * aggregator cannot have two different vectors masked with the same masks. */
#ifndef VF_IMAGE_PARTY_SECURE_SHARE_H
#define VF_IMAGE_PARTY_SECURE_SHARE_H

#include "coop/trainer.h"
#include "proto/federation.pb-c.h"
#include "util/vf_error.h"

/* Reads this party's certificate (its name and DER), key path and the CA. */
int ip_secure_open(const char *cert_path, const char *key_path, const char *ca_path, vf_error *err);
void ip_secure_close(void);
/* A fresh mask key for a new connection, into the Hello (its buffers stay
 * valid until the next call). */
int ip_secure_hello(Vflclip__V1__Hello *h, vf_error *err);
/* The masked answer to st over this party's splits; out's buffers stay
 * valid until the next call.  On failure *grpc_code and err say why. */
int ip_secure_answer(const Vflclip__V1__SecureSumTask *st, const vf_embedded_split split[3], Vflclip__V1__MaskedShare *out,
                     int *grpc_code, vf_error *err);

#endif
