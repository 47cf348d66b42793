/* tokenizer_tiny: the project's own small byte-level BPE vocabulary for
 * random-weight models (no real CLIP vocabulary is shipped or downloaded).
 *
 * Layout as OpenAI's: ids 0..255 the bytes (bytes_to_unicode order), 256..511
 * the same with "</w>", then one entry per learned merge (unless the merged
 * string is already there), then <|startoftext|> and <|endoftext|>.  Merges
 * are learned by plain BPE training over the built-in word list below (each
 * step merges the most frequent adjacent pair; ties go to the smaller pair
 * in byte order), stopping at TINY_MAX_MERGES or when every word is one token,
 * so the result is the same on every machine. */
#include "clip/tokenizer_internal.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TINY_MAX_MERGES 320

static const char tiny_corpus[] =
    "a photo of a skin lesion. a dermatoscopic image of a skin lesion. a close-up photo of the skin. "
    "a dermoscopy image of a pigmented lesion. this is a photo of a benign lesion. this is a photo of a malignant "
    "lesion. actinic keratoses and intraepithelial carcinoma. basal cell carcinoma. benign keratosis-like lesions. "
    "dermatofibroma. melanoma. melanocytic nevi. vascular lesions. squamous cell carcinoma. seborrheic keratosis. "
    "solar lentigo. lichen planus-like keratosis. bowen's disease. atypical nevus. dysplastic nevus. "
    "angioma, angiokeratoma, pyogenic granuloma and hemorrhage. the lesion is red, brown, black, blue, pink or "
    "white. the border is regular or irregular; the colour is uniform or varied. asymmetry, border, colour, "
    "diameter and evolution. the patient is a man or a woman of 45 years. the lesion is on the back, the face, "
    "the neck, the scalp, the chest, the abdomen, the arm, the hand, the leg, the foot or the trunk. "
    "histopathology confirmed the diagnosis. follow-up examination, consensus of experts, confocal microscopy. "
    "the image shows a network of pigment, dots and globules, streaks, a blue-white veil, regression structures, "
    "vessels and milia-like cysts. a photo of a cat. a photo of a dog. a picture of a person. an image of the "
    "hospital. the doctor and the nurse examine the patient. there are many images in the dataset; each image has "
    "a label. it's a test, isn't it? they're here, we've seen it, i'm sure, you'll see, he'd know. "
    "one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 "
    "the quick brown fox jumps over the lazy dog. learning prompts for vision and language models. "
    "federated training across hospitals with a secure aggregator and a knowledge party. "
    "skin skin lesion lesion image image photo photo of of the the a a and and";

typedef struct tiny_word {
    int *sym;
    int n, count;
} tiny_word;

typedef struct tiny_vocab {
    char **str; /* byte-level strings by id */
    int n, cap;
} tiny_vocab;

static int vocab_add(tiny_vocab *v, const char *s) {
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->str[i], s) == 0) return i;
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 1024;
        char **ns = realloc(v->str, sizeof(char *) * cap);
        if (!ns) return -1;
        v->str = ns, v->cap = cap;
    }
    v->str[v->n] = strdup(s);
    return v->str[v->n] ? v->n++ : -1;
}

/* Pre-tokenises the corpus as the tokenizer would and collects the distinct
 * words with their counts, as sequences of initial byte symbols. */
static int collect_words(tiny_word **words_out, int *n_out, const int byte_rank[256], vf_error *err) {
    char *norm;
    size_t len, np;
    vf_tok_piece *pieces;
    if (vf_tok_normalize(tiny_corpus, &norm, &len, err)) return -1;
    if (vf_tok_split(norm, len, 0, &pieces, &np, err)) {
        free(norm);
        return -1;
    }
    tiny_word *words = calloc(np ? np : 1, sizeof *words);
    int n = 0;
    if (!words) goto oom;
    for (size_t i = 0; i < np; i++) {
        const unsigned char *p = (const unsigned char *)norm + pieces[i].start;
        int pl = (int)pieces[i].len, found = -1;
        for (int w = 0; w < n && found < 0; w++) {
            if (words[w].n != pl) continue;
            int same = 1;
            for (int k = 0; k < pl && same; k++)
                same = words[w].sym[k] == (k + 1 < pl ? byte_rank[p[k]] : 256 + byte_rank[p[k]]);
            if (same) found = w;
        }
        if (found >= 0) {
            words[found].count++;
            continue;
        }
        words[n].sym = malloc(sizeof(int) * pl);
        if (!words[n].sym) goto oom;
        for (int k = 0; k < pl; k++) words[n].sym[k] = k + 1 < pl ? byte_rank[p[k]] : 256 + byte_rank[p[k]];
        words[n].n = pl;
        words[n].count = 1;
        n++;
    }
    free(pieces);
    free(norm);
    *words_out = words;
    *n_out = n;
    return 0;
oom:
    for (int w = 0; w < n; w++) free(words[w].sym);
    free(words);
    free(pieces);
    free(norm);
    return vf_fail(err, "tiny vocabulary: out of memory");
}

/* The most frequent adjacent pair (ties: smaller strings); count 0 if none. */
static int best_pair(const tiny_word *words, int n_words, const tiny_vocab *v, int *a_out, int *b_out) {
    int best = 0, ba = -1, bb = -1;
    /* O(pairs^2) over a corpus of a few hundred words: fine and simple */
    for (int w = 0; w < n_words; w++)
        for (int k = 0; k + 1 < words[w].n; k++) {
            int a = words[w].sym[k], b = words[w].sym[k + 1], count = 0;
            if (a == ba && b == bb) continue;
            for (int w2 = 0; w2 < n_words; w2++)
                for (int j = 0; j + 1 < words[w2].n; j++)
                    if (words[w2].sym[j] == a && words[w2].sym[j + 1] == b) count += words[w2].count;
            int better = count > best;
            if (count == best && count > 0) {
                int c = strcmp(v->str[a], v->str[ba]);
                better = c < 0 || (c == 0 && strcmp(v->str[b], v->str[bb]) < 0);
            }
            if (better) best = count, ba = a, bb = b;
        }
    *a_out = ba, *b_out = bb;
    return best;
}

static void apply_merge(tiny_word *words, int n_words, int a, int b, int merged) {
    for (int w = 0; w < n_words; w++) {
        int o = 0;
        for (int k = 0; k < words[w].n; k++) {
            if (k + 1 < words[w].n && words[w].sym[k] == a && words[w].sym[k + 1] == b) {
                words[w].sym[o++] = merged;
                k++;
            } else {
                words[w].sym[o++] = words[w].sym[k];
            }
        }
        words[w].n = o;
    }
}

static int write_text(const char *dir, const char *name, const char *text, vf_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return vf_write_atomic(path, text, strlen(text), err);
}

static const char tokenizer_config_json[] =
    "{\n"
    "  \"add_prefix_space\": false,\n"
    "  \"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<|startoftext|>\", \"lstrip\": false, "
    "\"normalized\": true, \"rstrip\": false, \"single_word\": false},\n"
    "  \"do_lower_case\": true,\n"
    "  \"eos_token\": {\"__type\": \"AddedToken\", \"content\": \"<|endoftext|>\", \"lstrip\": false, "
    "\"normalized\": true, \"rstrip\": false, \"single_word\": false},\n"
    "  \"errors\": \"replace\",\n"
    "  \"model_max_length\": 77,\n"
    "  \"pad_token\": \"<|endoftext|>\",\n"
    "  \"tokenizer_class\": \"CLIPTokenizer\",\n"
    "  \"unk_token\": {\"__type\": \"AddedToken\", \"content\": \"<|endoftext|>\", \"lstrip\": false, "
    "\"normalized\": true, \"rstrip\": false, \"single_word\": false}\n"
    "}\n";

static const char special_tokens_map_json[] =
    "{\"bos_token\": {\"content\": \"<|startoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
    "\"normalized\": true}, \"eos_token\": {\"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false, "
    "\"rstrip\": false, \"normalized\": true}, \"unk_token\": {\"content\": \"<|endoftext|>\", \"single_word\": false, "
    "\"lstrip\": false, \"rstrip\": false, \"normalized\": true}, \"pad_token\": \"<|endoftext|>\"}\n";

int vf_tokenizer_write_tiny(const char *dir, int *vocab_size, int *sot_id, int *eot_id, vf_error *err) {
    int cp[256], order[256], byte_rank[256];
    tiny_vocab v = {0};
    tiny_word *words = NULL;
    int n_words = 0, rc = -1, n_merges = 0;
    int merge_a[TINY_MAX_MERGES], merge_b[TINY_MAX_MERGES];
    char *merges_txt = NULL, *vocab_txt = NULL;
    cJSON *vj = NULL;
    vf_tok_byte_codepoints(cp, order);
    for (int i = 0; i < 256; i++) byte_rank[order[i]] = i;
    for (int eow = 0; eow < 2; eow++)
        for (int i = 0; i < 256; i++) {
            char s[16];
            int n = vf_tok_utf8_put(s, cp[order[i]]);
            strcpy(s + n, eow ? "</w>" : "");
            if (vocab_add(&v, s) < 0) goto oom;
        }
    if (collect_words(&words, &n_words, byte_rank, err)) goto done;
    while (n_merges < TINY_MAX_MERGES) {
        int a, b;
        if (best_pair(words, n_words, &v, &a, &b) < 1) break;
        char s[512];
        snprintf(s, sizeof s, "%s%s", v.str[a], v.str[b]);
        int merged = vocab_add(&v, s);
        if (merged < 0) goto oom;
        merge_a[n_merges] = a, merge_b[n_merges] = b;
        n_merges++;
        apply_merge(words, n_words, a, b, merged);
    }
    if (vocab_add(&v, VF_TOK_SOT_TEXT) < 0 || vocab_add(&v, VF_TOK_EOT_TEXT) < 0) goto oom;
    /* merges.txt */
    size_t cap = 64, o;
    for (int i = 0; i < n_merges; i++) cap += strlen(v.str[merge_a[i]]) + strlen(v.str[merge_b[i]]) + 2;
    merges_txt = malloc(cap);
    if (!merges_txt) goto oom;
    o = (size_t)sprintf(merges_txt, "#version: 0.2\n");
    for (int i = 0; i < n_merges; i++) o += (size_t)sprintf(merges_txt + o, "%s %s\n", v.str[merge_a[i]], v.str[merge_b[i]]);
    /* vocab.json in id order */
    vj = cJSON_CreateObject();
    if (!vj) goto oom;
    for (int i = 0; i < v.n; i++)
        if (!cJSON_AddNumberToObject(vj, v.str[i], i)) goto oom;
    vocab_txt = cJSON_PrintUnformatted(vj);
    if (!vocab_txt) goto oom;
    if (vf_mkdirs(dir, 0755, err) || write_text(dir, "vocab.json", vocab_txt, err) ||
        write_text(dir, "merges.txt", merges_txt, err) ||
        write_text(dir, "tokenizer_config.json", tokenizer_config_json, err) ||
        write_text(dir, "special_tokens_map.json", special_tokens_map_json, err))
        goto done;
    if (vocab_size) *vocab_size = v.n;
    if (sot_id) *sot_id = v.n - 2;
    if (eot_id) *eot_id = v.n - 1;
    rc = 0;
    goto done;
oom:
    vf_fail(err, "%s: out of memory while building the tiny vocabulary", dir);
done:
    cJSON_Delete(vj);
    free(vocab_txt);
    free(merges_txt);
    for (int w = 0; w < n_words; w++) free(words[w].sym);
    free(words);
    for (int i = 0; i < v.n; i++) free(v.str[i]);
    free(v.str);
    return rc;
}
