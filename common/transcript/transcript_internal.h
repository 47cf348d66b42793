/* transcript_internal: the chain arithmetic shared by the writer
 * (transcript.c) and the verifier (transcript_verify.c). */
#ifndef VF_TRANSCRIPT_INTERNAL_H
#define VF_TRANSCRIPT_INTERNAL_H

#include <stdint.h>

/* SHA-256("vflclip transcript v1|" run_id): the chain before the first entry. */
void vf_transcript_genesis(const char *run_id, unsigned char out[32]);
/* head = SHA-256(head || "seq|sender|receiver|task|kind|step|sha256|loss"). */
void vf_transcript_chain_step(unsigned char head[32], uint64_t seq, const char *sender, const char *receiver, uint64_t task,
                              const char *kind, uint64_t step, const char *sha_hex, const char *loss);
/* What the aggregator signs: SHA-256("vflclip transcript v1|" run "|" entries "|" head_hex). */
void vf_transcript_signed_hash(const char *run_id, uint64_t entries, const char *head_hex, unsigned char out[32]);

#endif
