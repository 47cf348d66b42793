/* cmd_tokenize: `vflclip tokenize` — prints the CLIP token ids of each text
 * as one JSON array per line, from SOT to EOT inclusive, no padding (the ids
 * Hugging Face's fast CLIPTokenizer gives).  Texts come from the arguments,
 * or one per line from stdin with --stdin.  --words prints the BPE ids alone
 * (no SOT/EOT, no truncation), as CoOp prompt assembly sees them.
 * --write-tiny-vocab DIR writes the project's small vocabulary (the one
 * make-model uses) and prints its size and special ids as JSON.
 * --fingerprint prints the vocabulary's fingerprint (the one a knowledge
 * party sends in its Hello) and where the vocabulary was loaded from. */
#include "cli/commands.h"
#include "clip/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *o) {
    fprintf(o, "usage: vflclip tokenize (--model DIR [--tokenizer PATH] | --tokenizer PATH | --bpe FILE.txt.gz)\n"
               "                        [--context-length N] [--words] TEXT...\n"
               "       vflclip tokenize (...) [...] --stdin   (one text per line)\n"
               "       vflclip tokenize (...) --fingerprint    (prints {\"fingerprint\", \"vocab_size\", \"source\"})\n"
               "       vflclip tokenize --write-tiny-vocab DIR\n"
               "  --model DIR        a CLIP checkpoint directory: its vocab.json + merges.txt, else its\n"
               "                     bpe_simple_vocab_16e6.txt.gz\n"
               "  --tokenizer PATH   a directory with vocab.json + merges.txt or a bpe_simple_vocab_16e6.txt.gz\n"
               "                     (wins over the model directory's files)\n"
               "  --bpe FILE         OpenAI's bpe_simple_vocab_16e6.txt.gz\n"
               "  --context-length N ids per text including SOT and EOT (default 77); longer text is truncated,\n"
               "                     keeping EOT last, and a note goes to stderr\n"
               "  --words            print the BPE ids without SOT/EOT and without truncation\n");
}

static void print_ids(const int32_t *ids, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
    puts("]");
}

/* Tokenizes one text and prints it; returns 0 or 1 (error, reported). */
static int tokenize_one(const vf_tokenizer *t, const char *text, int index, int context, int words, int32_t **buf,
                        int *cap) {
    vf_error err = {{0}};
    int n, truncated = 0;
    if (words) {
        for (;;) {
            if (vf_tokenize_words(t, text, *buf, *cap, &n, &err) == 0) break;
            if (n <= *cap) { /* a real error, not a short buffer */
                fprintf(stderr, "vflclip tokenize: text %d: %s\n", index, err.msg);
                return 1;
            }
            int32_t *nb = realloc(*buf, sizeof(int32_t) * n);
            if (!nb) {
                fprintf(stderr, "vflclip tokenize: out of memory\n");
                return 1;
            }
            *buf = nb, *cap = n;
        }
    } else if (vf_tokenize(t, text, *buf, context, &n, &truncated, &err)) {
        fprintf(stderr, "vflclip tokenize: text %d: %s\n", index, err.msg);
        return 1;
    }
    print_ids(*buf, n);
    if (truncated)
        fprintf(stderr, "vflclip tokenize: text %d was truncated to %d tokens (EOT kept last)\n", index, context);
    return 0;
}

static int write_tiny(const char *dir) {
    vf_error err = {{0}};
    int size, sot, eot;
    if (vf_tokenizer_write_tiny(dir, &size, &sot, &eot, &err)) {
        fprintf(stderr, "vflclip tokenize: %s\n", err.msg);
        return 1;
    }
    printf("{\"vocab_size\": %d, \"sot\": %d, \"eot\": %d}\n", size, sot, eot);
    return 0;
}

static int print_fingerprint(const char *model, const char *tokenizer, const char *bpe) {
    vf_error err = {{0}};
    vf_tokenizer *t = NULL;
    char source[4200] = "", hex[65];
    int rc = bpe ? vf_tokenizer_load_bpe_gz(&t, bpe, &err)
                 : vf_tokenizer_load_for_model(&t, model, tokenizer, source, sizeof source, &err);
    if (rc == 0) rc = vf_tokenizer_fingerprint(t, hex, &err);
    if (rc) {
        vf_tokenizer_free(t);
        fprintf(stderr, "vflclip tokenize: %s\n", err.msg);
        return 1;
    }
    /* the source is printed as given; JSON-escape only what a path may hold that JSON forbids raw */
    printf("{\"fingerprint\": \"%s\", \"vocab_size\": %d, \"source\": \"", hex, vf_tokenizer_vocab_size(t));
    for (const char *p = bpe ? bpe : source; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if ((unsigned char)*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    printf("\"}\n");
    vf_tokenizer_free(t);
    return 0;
}

int vf_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *bpe = NULL, *tiny = NULL;
    int context = 77, words = 0, from_stdin = 0, fingerprint = 0, first_text = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) { first_text = i + 1; break; }
        if (strncmp(a, "--", 2) != 0) { first_text = i; break; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!strcmp(a, "--words")) { words = 1; continue; }
        if (!strcmp(a, "--stdin")) { from_stdin = 1; continue; }
        if (!strcmp(a, "--fingerprint")) { fingerprint = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip tokenize: %s needs a value (or is unknown)\n", a); usage(stderr); return 2; }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--tokenizer")) tokenizer = v;
        else if (!strcmp(a, "--bpe")) bpe = v;
        else if (!strcmp(a, "--write-tiny-vocab")) tiny = v;
        else if (!strcmp(a, "--context-length")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 2 || n > 1000000) { fprintf(stderr, "vflclip tokenize: --context-length must be an integer >= 2\n"); return 2; }
            context = (int)n;
        } else { fprintf(stderr, "vflclip tokenize: unknown option %s\n", a); usage(stderr); return 2; }
    }
    if (tiny) return write_tiny(tiny);
    if (!(model || tokenizer) == !bpe) {
        fprintf(stderr, "vflclip tokenize: give --model and/or --tokenizer, or --bpe\n");
        usage(stderr);
        return 2;
    }
    if (fingerprint) return print_fingerprint(model, tokenizer, bpe);
    if ((first_text < argc) == from_stdin) { fprintf(stderr, "vflclip tokenize: give texts as arguments or --stdin\n"); usage(stderr); return 2; }
    vf_error err = {{0}};
    vf_tokenizer *t;
    if (bpe ? vf_tokenizer_load_bpe_gz(&t, bpe, &err)
            : vf_tokenizer_load_for_model(&t, model, tokenizer, NULL, 0, &err)) {
        fprintf(stderr, "vflclip tokenize: %s\n", err.msg);
        return 1;
    }
    int cap = context > 77 ? context : 77, failed = 0;
    int32_t *buf = malloc(sizeof(int32_t) * cap);
    if (!buf) { vf_tokenizer_free(t); fprintf(stderr, "vflclip tokenize: out of memory\n"); return 1; }
    if (from_stdin) {
        char *line = NULL;
        size_t lcap = 0;
        ssize_t len;
        for (int index = 0; (len = getline(&line, &lcap, stdin)) >= 0; index++) {
            if (len > 0 && line[len - 1] == '\n') line[--len] = 0;
            failed |= tokenize_one(t, line, index, context, words, &buf, &cap);
        }
        free(line);
    } else {
        for (int i = first_text; i < argc; i++) failed |= tokenize_one(t, argv[i], i - first_text, context, words, &buf, &cap);
    }
    free(buf);
    vf_tokenizer_free(t);
    return failed;
}
