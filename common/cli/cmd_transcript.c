/* cmd_transcript: `vflclip transcript verify FILE` — checks a run's
 * transcript (transcript.jsonl from `vflclip run results`): the hash chain,
 * the aggregator's signature (its certificate against the federation CA
 * and/or a given aggregator certificate), that it covers the whole run
 * (run_start at seq 1, run_end last), and with --party-log that a party's
 * own log of what it sent and received in that run agrees
 * (transcript/transcript.h). */
#include "cli/commands.h"
#include "transcript/transcript.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *o) {
    fprintf(o, "usage: vflclip transcript verify FILE (--ca CA.crt | --cert AGGREGATOR.crt)... [--party-log FILE]...\n"
               "  FILE          a run's transcript.jsonl\n"
               "  --ca          the federation CA: the signer must hold an aggregator certificate it issued\n"
               "  --cert        the aggregator certificate the signature must come from\n"
               "  --party-log   a party's party-log.jsonl (its state directory): its messages must agree (repeatable)\n"
               "exit status 0 when everything checks, 1 with the first disagreement (file, line, what) otherwise\n");
}

int vf_cmd_transcript(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "verify")) {
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { usage(stdout); return 0; }
        usage(stderr);
        return 2;
    }
    const char *file = NULL, *ca = NULL, *cert = NULL, *logs[64];
    int n_logs = 0;
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { usage(stdout); return 0; }
        if (o[0] != '-') {
            if (file) { fprintf(stderr, "vflclip transcript verify: one transcript at a time (%s, %s)\n", file, o); return 2; }
            file = o;
            continue;
        }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip transcript verify: %s needs a value (or is unknown)\n", o); return 2; }
        const char *v = argv[++i];
        if (!strcmp(o, "--ca")) ca = v;
        else if (!strcmp(o, "--cert")) cert = v;
        else if (!strcmp(o, "--party-log") && n_logs < 64) logs[n_logs++] = v;
        else { fprintf(stderr, "vflclip transcript verify: unknown option %s\n", o); usage(stderr); return 2; }
    }
    if (!file) { usage(stderr); return 2; }
    vf_transcript_report rep;
    vf_error err;
    if (vf_transcript_verify(file, ca, cert, NULL, &rep, &err)) {
        fprintf(stderr, "vflclip transcript verify: FAILED: %s\n", err.msg);
        return 1;
    }
    printf("%s: run %s, seq 1 (run start) to %llu (run end), hash chain intact (head %.16s), signed by aggregator '%s' "
           "(serial %s)%s%s\n", file, rep.run_id, (unsigned long long)rep.entries, rep.head, rep.signer_name, rep.signer_serial,
           ca ? ", certificate issued by " : "", ca ? ca : "");
    if (rep.resumes) printf("%s: the aggregator restarted and resumed the run %llu time(s)\n", file, (unsigned long long)rep.resumes);
    if (rep.decisions)
        printf("%s: NOTE: %llu operator decision(s) to go on over a truncated or damaged transcript, the first at seq %llu: "
               "messages before it may be missing\n", file, (unsigned long long)rep.decisions,
               (unsigned long long)rep.first_decision_seq);
    for (int i = 0; i < n_logs; i++) {
        if (vf_transcript_verify(file, ca, cert, logs[i], &rep, &err)) {
            fprintf(stderr, "vflclip transcript verify: FAILED: %s\n", err.msg);
            return 1;
        }
        printf("%s: party '%s' in run %s, transcript seq %llu to %llu: agrees with the transcript (%llu messages sent, %llu "
               "received)", logs[i], rep.party_name, rep.run_id, (unsigned long long)rep.party_first_seq,
               (unsigned long long)rep.party_last_seq, (unsigned long long)rep.party_sent, (unsigned long long)rep.party_received);
        if (rep.party_unrecorded_sent)
            printf("; %llu sent after its last recorded message (in flight when the run ended) are not in the transcript",
                   (unsigned long long)rep.party_unrecorded_sent);
        printf("\n");
    }
    return 0;
}
