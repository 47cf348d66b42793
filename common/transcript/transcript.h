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
 * The transcript proves it covers the whole run: seq 1 is a run_start record
 * (SHA-256 of the run's configuration), the last entry before the signature
 * is a run_end record, and after an aggregator restart a run_resume record
 * marks where it continued; all three come from the aggregator itself
 * (receiver "-").  At every checkpoint the aggregator fsyncs the transcript
 * and writes <transcript>.head (entries and head), so a restart can tell a
 * transcript that lost lines from one that is whole, and refuses to go on
 * with a truncated or missing one unless the operator decides so (an
 * operator_decision record then says where, and the verifier reports it).
 *
 * Each party keeps its own log (party log, state directory) of the digest of
 * every message it sent and received, and a {"run": id} line whenever a
 * message from the aggregator (Welcome, which the aggregator also sends to
 * every connected party when a run starts, or RunSetup) names a different
 * run.  `vflclip transcript verify FILE --party-log LOG` checks that the
 * party received exactly the transcript's messages to it during that run
 * (nothing before its first, nothing after its last but a Shutdown), and that
 * what it sent is, from its first message of the run on, what the transcript
 * lists (messages still in flight when the run ended may follow).
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

/* Kinds of the aggregator's own records (receiver "-", task 0). */
#define VF_TRANSCRIPT_RUN_START "run_start"
#define VF_TRANSCRIPT_RUN_RESUME "run_resume"
#define VF_TRANSCRIPT_RUN_END "run_end"
#define VF_TRANSCRIPT_OPERATOR_DECISION "operator_decision"

/* SHA-256 of a packed protobuf message. */
void vf_pb_sha256(const ProtobufCMessage *m, unsigned char out[32]);
void vf_sha256_hex(const unsigned char h[32], char hex[65]);

/* Kind (oneof field name, e.g. "text_backward") and step of a federation message
 * (a MaskedShare gives its sum id: a secure sum's task and answers share it). */
const char *vf_transcript_kind(const ProtobufCMessage *m, uint64_t *step);

/* ---- the aggregator's transcript -------------------------------------------- */
typedef struct vf_transcript {
    FILE *f;
    char path[4400], run_id[64];
    uint64_t entries;
    unsigned char head[32];
    int signed_;
    char first_kind[40];             /* kind of seq 1 ("" when there is none yet) */
    char damage[600];                /* opened with VF_TRANSCRIPT_ACCEPT_DAMAGE: what was wrong ("" when nothing) */
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
 * run (after an aggregator restart; a torn last line is cut off).  Every
 * complete line of an existing transcript must continue the chain (seq in
 * order, chain value recomputed), and when <path>.head exists the chain must
 * reach its entries with its head; otherwise the open fails naming the file,
 * the line and the problem, and changes nothing. */
int vf_transcript_open(vf_transcript *t, const char *path, const char *run_id, vf_error *err);
/* Flags of vf_transcript_open_ex. */
#define VF_TRANSCRIPT_RESUME 1          /* the transcript must exist, with <path>.head, and start with run_start */
#define VF_TRANSCRIPT_ACCEPT_DAMAGE 2   /* the operator decided to go on: a damaged file is kept as
                                           <path>.damaged-<time>, the chain continues from its last good
                                           line (or a new file), t->damage says what was wrong */
int vf_transcript_open_ex(vf_transcript *t, const char *path, const char *run_id, int flags, vf_error *err);
int vf_transcript_append(vf_transcript *t, const vf_transcript_entry *e, vf_error *err);
/* Makes the transcript durable (fsync) and records its entries and head in
 * <path>.head (atomic), the mark a restart checks the file against. */
int vf_transcript_commit(vf_transcript *t, vf_error *err);
/* Appends the run_end record (sender: the serial of cert_path's
 * certificate), signs the head with key_path, writes the end line with that
 * certificate, closes. */
int vf_transcript_sign(vf_transcript *t, const char *key_path, const char *cert_path, vf_error *err);
void vf_transcript_close(vf_transcript *t);

/* ---- a party's log ------------------------------------------------------------ */
typedef struct vf_party_log {
    FILE *f;
    int run_known;                   /* 0 until a message names a run; then run[] is the current one */
    char run[72];
} vf_party_log;

/* Opens (appends to) path; the first line of a new file names the party.
 * The next Welcome or RunSetup received writes a {"run": id} line. */
int vf_party_log_open(vf_party_log *l, const char *path, const char *name, const char *serial, vf_error *err);
/* sent: 1 for a message the party sent, 0 for one it received. */
void vf_party_log_record(vf_party_log *l, int sent, const ProtobufCMessage *m, const uint8_t *raw, size_t raw_len);
void vf_party_log_close(vf_party_log *l);

/* ---- verification --------------------------------------------------------------- */
typedef struct vf_transcript_report {
    char run_id[64], signer_name[128], signer_serial[64];
    uint64_t entries;
    char head[65];
    uint64_t decisions, first_decision_seq;   /* operator_decision records */
    uint64_t resumes;                         /* run_resume records */
    /* with a party log: */
    char party_name[128];
    uint64_t party_sent, party_received;      /* messages of the party found in the transcript */
    uint64_t party_first_seq, party_last_seq; /* the party's first and last message in the transcript */
    uint64_t party_unrecorded_sent;           /* sent after its last recorded message (in flight at the end) */
} vf_transcript_report;

/* Checks the chain, the signature (by the certificate in the transcript,
 * which must be an aggregator's, verified against ca_path when given and/or
 * equal to cert_path when given; one of the two is required), that the
 * transcript covers the run (seq 1 is run_start, the last entry run_end, the
 * signed entry count that of the last entry, the aggregator's own records
 * signed by it), and, when party_log is given, that the party's log of that
 * run agrees.  Errors name the file and line and what is wrong. */
int vf_transcript_verify(const char *path, const char *ca_path, const char *cert_path, const char *party_log,
                         vf_transcript_report *rep, vf_error *err);

#endif
