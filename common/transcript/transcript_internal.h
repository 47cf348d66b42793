/* transcript_internal: the chain arithmetic shared by the writer
 * (transcript.c) and the verifier (transcript_verify.c). */
#ifndef VF_TRANSCRIPT_INTERNAL_H
#define VF_TRANSCRIPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <cJSON.h>

/* SHA-256("vflclip transcript v1|" run_id): the chain before the first entry. */
void vf_transcript_genesis(const char *run_id, unsigned char out[32]);
/* head = SHA-256(head || "seq|sender|receiver|task|kind|step|sha256|loss"). */
void vf_transcript_chain_step(unsigned char head[32], uint64_t seq, const char *sender, const char *receiver, uint64_t task,
                              const char *kind, uint64_t step, const char *sha_hex, const char *loss);
/* What the aggregator signs: SHA-256("vflclip transcript v1|" run "|" entries "|" head_hex). */
void vf_transcript_signed_hash(const char *run_id, uint64_t entries, const char *head_hex, unsigned char out[32]);

/* One line of a transcript, a .head file or a party log, parsed strictly: a
 * JSON object with nothing but whitespace after it and no key twice (cJSON
 * looks up the first of two equal keys, Python's json keeps the last: a
 * line must not mean one thing to the verifier and another to an
 * independent reader).  NULL with *why set when it is not. */
cJSON *vf_transcript_parse_line(const char *buf, size_t len, const char **why);
/* The value of key (case-sensitive) as a whole number in [0, 2^53]: JSON
 * numbers arrive as doubles, and converting one beyond the range of
 * uint64_t is undefined behaviour; beyond 2^53 doubles skip integers, so the
 * chain text could not be rebuilt exactly.  -1 when absent or out of range. */
int vf_transcript_num(const cJSON *o, const char *key, uint64_t *out);
/* The value of key (case-sensitive) when it is a string, else NULL. */
const char *vf_transcript_str(const cJSON *o, const char *key);

#endif
