/* fuzz_parties: the fixture parties that fuzz_aggregator and fuzz_admin
 * connect before each input: an image party "h1" (4-dim embeddings, 6/2/2
 * train/val/test examples, a mask key the aggregator relays unchecked) and a
 * knowledge party "kp", both on the model "fuzzmodel". */
#ifndef VF_FUZZ_PARTIES_H
#define VF_FUZZ_PARTIES_H

#include "proto/federation.pb-c.h"

/* The Hello of h1 (image) or kp; what it points to is static. */
static void fixture_hello(Vflclip__V1__Hello *h, int image) {
    static Vflclip__V1__SplitSize s[3];
    static Vflclip__V1__SplitSize *sp[3] = {&s[0], &s[1], &s[2]};
    static const char *const names[3] = {"train", "val", "test"};
    static const uint64_t counts[3] = {6, 2, 2};
    static uint8_t key[32] = {9}, sig[8] = {1, 2, 3}, cert[8] = {4, 5, 6};
    for (int k = 0; k < 3; k++) {
        vflclip__v1__split_size__init(&s[k]);
        s[k].split = (char *)names[k];
        s[k].count = counts[k];
    }
    vflclip__v1__hello__init(h);
    h->role = image ? VFLCLIP__V1__ROLE__ROLE_IMAGE_PARTY : VFLCLIP__V1__ROLE__ROLE_KNOWLEDGE_PARTY;
    h->name = image ? "h1" : "kp";
    h->model_fingerprint = "fuzzmodel";
    h->protocol_version = 1;
    h->embed_dim = 4;
    if (image) {
        h->n_splits = 3;
        h->splits = sp;
        h->preprocessing_fingerprint = "fuzzpp";
        h->mask_public_key = (ProtobufCBinaryData){sizeof key, key};
        h->mask_key_signature = (ProtobufCBinaryData){sizeof sig, sig};
        h->certificate = (ProtobufCBinaryData){sizeof cert, cert};
    } else {
        h->tokenizer_fingerprint = "fuzztok";
    }
}

#endif
