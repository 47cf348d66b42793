/* fuzz_transcript: `vflclip transcript verify` (vf_transcript_verify) on a
 * hostile transcript and party log: line parsing, the hash chain, the run's
 * boundaries, the end line's certificate and signature (checked against the
 * fixture CA, tests/fuzz/fixtures/pki/ca.crt, which signed the seeds), and
 * the party log's agreement.
 *
 * Input: the transcript, optionally followed by SEP and the party's log.
 *
 * The seeds are written by the real writers: with VF_FUZZ_WRITE_SEEDS=DIR
 * this program writes signed transcripts (vf_transcript_open/append/sign,
 * with the fixture aggregator key) and a matching party log
 * (vf_party_log_record) into DIR and exits (tests/fuzz/make_corpus.py). */
#include "transcript/transcript.h"
#include "proto/federation.pb-c.h"
#include "fuzz_util.h"

#define SEP "\n--party-log--\n"

static char ca[512], cert[512], key[512];

static void fixtures(void) {
    const char *d = getenv("VF_FUZZ_FIXTURES") ? getenv("VF_FUZZ_FIXTURES") : "tests/fuzz/fixtures";
    snprintf(ca, sizeof ca, "%s/pki/ca.crt", d);
    snprintf(cert, sizeof cert, "%s/pki/aggregator-cert.pem", d);
    snprintf(key, sizeof key, "%s/pki/aggregator-key.pem", d);
}

/* One message between the aggregator and party h1, in the transcript and in
 * h1's log (sent = 1: from h1). */
static void record(vf_transcript *t, vf_party_log *l, const char *agg, int sent, ProtobufCMessage *m, uint64_t task) {
    vf_transcript_entry e = {.sender = sent ? "75009C6DB8CF6FA4B89DBDCD825EF584" : agg,
                             .receiver = sent ? agg : "75009C6DB8CF6FA4B89DBDCD825EF584", .task = task};
    e.kind = vf_transcript_kind(m, &e.step);
    vf_pb_sha256(m, e.sha256);
    vf_error err;
    if (vf_transcript_append(t, &e, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    vf_party_log_record(l, sent, m, NULL, 0);
}

static void write_seeds(const char *dir, int n_msgs, const char *name) {
    char tpath[600], lpath[600], out[600];
    snprintf(tpath, sizeof tpath, "%s/t.jsonl", fuzz_dir());
    snprintf(lpath, sizeof lpath, "%s/party.log", fuzz_dir());
    unlink(tpath);
    unlink(lpath);
    vf_error err;
    vf_transcript t;
    vf_party_log l;
    const char *agg = "40549C3D52D6C869B0831E37CD4D18F9";   /* the fixture aggregator certificate's serial */
    if (vf_transcript_open(&t, tpath, "run-fuzz", &err) || vf_party_log_open(&l, lpath, "h1", "75009C6DB8CF6FA4B89DBDCD825EF584", &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    vf_transcript_entry start = {.sender = agg, .receiver = "-", .kind = VF_TRANSCRIPT_RUN_START};
    vf_transcript_append(&t, &start, &err);
    Vflclip__V1__Welcome w = VFLCLIP__V1__WELCOME__INIT;
    w.aggregator_name = "agg.fuzz";
    w.run_id = "run-fuzz";
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME;
    am.welcome = &w;
    record(&t, &l, agg, 0, &am.base, 0);
    for (int i = 0; i < n_msgs; i++) {
        Vflclip__V1__EncodeSplit es = VFLCLIP__V1__ENCODE_SPLIT__INIT;
        es.split = "train";
        Vflclip__V1__AggregatorMessage a2 = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
        a2.task_id = 1 + (uint64_t)i;
        a2.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_ENCODE_SPLIT;
        a2.encode_split = &es;
        record(&t, &l, agg, 0, &a2.base, a2.task_id);
        float emb[4] = {0.5f, -1, 2, (float)i};
        int32_t label = i % 7;
        char *ids[1] = {"ISIC_0000001"};
        Vflclip__V1__EmbeddingsChunk ch = VFLCLIP__V1__EMBEDDINGS_CHUNK__INIT;
        ch.split = "train";
        ch.count = 1;
        ch.dim = 4;
        ch.n_data = 4;
        ch.data = emb;
        ch.n_labels = 1;
        ch.labels = &label;
        ch.n_ids = 1;
        ch.ids = ids;
        ch.last = 1;
        ch.total = 1;
        Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
        pm.task_id = a2.task_id;
        pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_EMBEDDINGS;
        pm.embeddings = &ch;
        record(&t, &l, agg, 1, &pm.base, pm.task_id);
    }
    vf_party_log_close(&l);
    if (vf_transcript_sign(&t, key, cert, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    char *tt, *lt;
    size_t tn, ln;
    FILE *f = fopen(tpath, "rb");
    FILE *g = fopen(lpath, "rb");
    if (!f || !g) exit(1);
    tt = malloc(1 << 16);
    lt = malloc(1 << 16);
    tn = fread(tt, 1, 1 << 16, f);
    ln = fread(lt, 1, 1 << 16, g);
    fclose(f);
    fclose(g);
    snprintf(out, sizeof out, "%s/%s", dir, name);
    FILE *o = fopen(out, "wb");
    if (!o) exit(1);
    fwrite(tt, 1, tn, o);
    fclose(o);
    snprintf(out, sizeof out, "%s/%s-with-party-log", dir, name);
    o = fopen(out, "wb");
    if (!o) exit(1);
    fwrite(tt, 1, tn, o);
    fputs(SEP, o);
    fwrite(lt, 1, ln, o);
    fclose(o);
    free(tt);
    free(lt);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fixtures();
    const char *seeds = getenv("VF_FUZZ_WRITE_SEEDS");
    if (seeds) {
        write_seeds(seeds, 1, "signed-1");
        write_seeds(seeds, 3, "signed-3");
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *log = memmem(data, size, SEP, sizeof SEP - 1);
    size_t tsize = log ? (size_t)(log - data) : size;
    char tpath[600];
    snprintf(tpath, sizeof tpath, "%s", fuzz_write("transcript.jsonl", data, tsize));
    const char *lpath = log ? fuzz_write("party.log", log + sizeof SEP - 1, size - tsize - (sizeof SEP - 1)) : NULL;
    vf_transcript_report rep;
    vf_error err;
    int rc = vf_transcript_verify(tpath, ca, NULL, lpath, &rep, &err);
    if (getenv("VF_FUZZ_VERBOSE")) fprintf(stderr, "verify: %d %s\n", rc, rc ? err.msg : "ok");
    return 0;
}
