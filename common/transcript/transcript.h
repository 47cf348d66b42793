/* transcript: a tamper-evident record of every message of a run.
 *
 * The aggregator appends one line per message it sends or receives while a
 * run is active (run directory, transcript.jsonl): sender and receiver
 * certificate serials, task id, kind, step, SHA-256 of the protobuf payload
 * and, for a TextBackward, the batch loss.  Each line carries
 *   chain = SHA-256(previous chain || canonical text of the line)
 * starting from SHA-256("vflclip transcript v1|" run_id), so changing,
 * dropping or reordering a line breaks every later chain value.  When the
 * run ends the aggregator signs the head with its certificate's key (ECDSA
 * P-256 over SHA-256 of "vflclip transcript v1|run|entries|head") and writes
 * the signature and its certificate (DER, base64) as the last line.
 *
 * Each party keeps its own log (party log, state directory) of the digest of
 * every message it sent and received; `vflclip transcript verify FILE
 * --party-log LOG` checks that the transcript's messages to and from that
 * party are, in each direction, one contiguous run of the party's own log.
 *
 * Payload digests are computed by packing the message into a SHA-256 stream
 * (no copy, no allocation), which gives the bytes that travel: protobuf-c
 * packs deterministically. */
#ifndef VF_TRANSCRIPT_H
#define VF_TRANSCRIPT_H

#include <stdint.h>
#include <stdio.h>
#include <protobuf-c/protobuf-c.h>

#include "util/vf_error.h"

#define VF_TRANSCRIPT_MAGIC "vflclip transcript v1|"

/* SHA-256 of a packed protobuf message. */
void vf_pb_sha256(const ProtobufCMessage *m, unsigned char out[32]);
void vf_sha256_hex(const unsigned char h[32], char hex[65]);

/* Kind (oneof field name, e.g. "text_backward") and step of a federation message. */
const char *vf_transcript_kind(const ProtobufCMessage *m, uint64_t *step);

/* ---- the aggregator's transcript -------------------------------------------- */
typedef struct vf_transcript {
    FILE *f;
    char path[4400], run_id[64];
    uint64_t entries;
    unsigned char head[32];
    int signed_;
} vf_transcript;

typedef struct vf_transcript_entry {
    const char *sender, *receiver;   /* certificate serials (hex) */
    uint64_t task, step;
    const char *kind;
    unsigned char sha256[32];
    int has_loss;
    float loss;
} vf_transcript_entry;

/* Creates path, or continues the chain of an existing transcript of the same
 * run (after an aggregator restart; a torn last line is cut off). */
int vf_transcript_open(vf_transcript *t, const char *path, const char *run_id, vf_error *err);
int vf_transcript_append(vf_transcript *t, const vf_transcript_entry *e, vf_error *err);
/* Signs the head with key_path, writes the end line with cert_path's certificate, closes. */
int vf_transcript_sign(vf_transcript *t, const char *key_path, const char *cert_path, vf_error *err);
void vf_transcript_close(vf_transcript *t);

/* ---- a party's log ------------------------------------------------------------ */
typedef struct vf_party_log {
    FILE *f;
} vf_party_log;

/* Opens (appends to) path; the first line of a new file names the party. */
int vf_party_log_open(vf_party_log *l, const char *path, const char *name, const char *serial, vf_error *err);
/* sent: 1 for a message the party sent, 0 for one it received. */
void vf_party_log_record(vf_party_log *l, int sent, const ProtobufCMessage *m, const uint8_t *raw, size_t raw_len);
void vf_party_log_close(vf_party_log *l);

/* ---- verification --------------------------------------------------------------- */
typedef struct vf_transcript_report {
    char run_id[64], signer_name[128], signer_serial[64];
    uint64_t entries;
    char head[65];
    int party_sent, party_received;   /* messages of the party found in the transcript */
} vf_transcript_report;

/* Checks the chain, the signature (by the certificate in the transcript,
 * which must be an aggregator's, verified against ca_path when given and/or
 * equal to cert_path when given; one of the two is required), and, when
 * party_log is given, that the party's log agrees.  Errors name the file and
 * line. */
int vf_transcript_verify(const char *path, const char *ca_path, const char *cert_path, const char *party_log,
                         vf_transcript_report *rep, vf_error *err);

#endif
