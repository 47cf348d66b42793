/* fuzz_tokenizer: arbitrary bytes as text to tokenize (UTF-8 validation, NFC,
 * whitespace and lowercase folding, the pre-tokenizer split, byte-level BPE,
 * truncation), with the project's tiny vocabulary (written once with
 * vf_tokenizer_write_tiny) and, when ../shared/data is there, OpenAI's real
 * 49,408-entry vocabulary.  Byte 0 picks the vocabulary and the id budget. */
#include "clip/tokenizer.h"
#include "fuzz_util.h"

static vf_tokenizer *tiny, *real;

static void check(const vf_tokenizer *t, const char *text, int max_len) {
    int32_t ids[VF_CLIP_CONTEXT_LENGTH];
    int n = -1, truncated = 0;
    vf_error err;
    if (vf_tokenize(t, text, ids, max_len, &n, &truncated, &err) == 0) {
        if (n < 2 || n > max_len || ids[0] != vf_tokenizer_sot(t) || ids[n - 1] != vf_tokenizer_eot(t)) abort();
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= vf_tokenizer_vocab_size(t)) abort();
    }
    int32_t words[VF_CLIP_CONTEXT_LENGTH];
    if (vf_tokenize_words(t, text, words, max_len, &n, &err) == 0 && (n < 0 || n > max_len)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vf_error err;
    if (!tiny) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/tiny-vocab", fuzz_dir());
        if (vf_tokenizer_write_tiny(dir, NULL, NULL, NULL, &err) || vf_tokenizer_load_dir(&tiny, dir, &err)) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", err.msg);
            abort();
        }
        if (vf_tokenizer_load_bpe_gz(&real, "../shared/data/clip-tokenizer/bpe_simple_vocab_16e6.txt.gz", &err))
            real = NULL;   /* no shared data: the tiny vocabulary only */
    }
    if (size < 1) return 0;
    const vf_tokenizer *t = (data[0] & 1) && real ? real : tiny;
    int max_len = 2 + (data[0] >> 1) % (VF_CLIP_CONTEXT_LENGTH - 1);
    char *text = fuzz_cstr(data + 1, size - 1);
    check(t, text, max_len);
    free(text);
    return 0;
}
