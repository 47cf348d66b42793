/* tokenizer: vocabulary loading, the merge table and byte-level BPE.
 *
 * The vocabulary is a string -> id hash (token strings in vocab.json's
 * byte-level spelling) and the merges a (left id, right id) -> (rank, merged
 * id) hash, so BPE works on ids.  BPE follows tokenizers' Word::merge_all:
 * a min-heap of candidate pairs ordered by (rank, position), each popped pair
 * merged unless it went stale; equivalent to OpenAI's "merge the best bigram
 * everywhere" loop but O(n log n) in the word length, and without a cache. */
#include "clip/tokenizer_internal.h"
#include "util/fileio.h"
#include "util/sha256.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* OpenAI's simple_tokenizer keeps merges[1 : 49152 - 256 - 2 + 1]; so does
 * transformers' CLIPTokenizer when it reads merges.txt. */
#define MAX_MERGES (49152 - 256 - 2)

struct vf_tokenizer {
    int vocab_size, sot, eot, unk;
    vf_tok_text_rules rules;            /* whose text cleaning and specials apply */
    int byte_id[256], byte_eow_id[256]; /* -1: not in the vocabulary (becomes unk) */
    /* vocabulary: open addressing, keys owned */
    char **vocab_keys;
    int32_t *vocab_ids;
    size_t vocab_cap;
    /* merges: open addressing on (left << 32 | right) */
    uint64_t *merge_keys;
    int32_t *merge_rank, *merge_new;
    size_t merge_cap;
    int n_merges;
};

#define EMPTY_KEY UINT64_MAX

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static int tables_init(vf_tokenizer *t, size_t n_vocab, size_t n_merges) {
    t->vocab_cap = pow2_at_least(2 * n_vocab);
    t->merge_cap = pow2_at_least(2 * n_merges);
    t->vocab_keys = calloc(t->vocab_cap, sizeof(char *));
    t->vocab_ids = calloc(t->vocab_cap, sizeof(int32_t));
    t->merge_keys = malloc(t->merge_cap * sizeof(uint64_t));
    t->merge_rank = calloc(t->merge_cap, sizeof(int32_t));
    t->merge_new = calloc(t->merge_cap, sizeof(int32_t));
    if (!t->vocab_keys || !t->vocab_ids || !t->merge_keys || !t->merge_rank || !t->merge_new) return -1;
    for (size_t i = 0; i < t->merge_cap; i++) t->merge_keys[i] = EMPTY_KEY;
    return 0;
}

static size_t vocab_slot(const vf_tokenizer *t, const char *s, size_t n) {
    size_t i = hash_bytes(s, n) & (t->vocab_cap - 1);
    while (t->vocab_keys[i] && !(strlen(t->vocab_keys[i]) == n && memcmp(t->vocab_keys[i], s, n) == 0))
        i = (i + 1) & (t->vocab_cap - 1);
    return i;
}

static int vocab_get(const vf_tokenizer *t, const char *s, size_t n) {
    size_t i = vocab_slot(t, s, n);
    return t->vocab_keys[i] ? t->vocab_ids[i] : -1;
}

/* Inserts or overwrites (a later duplicate wins, as a Python dict does). */
static int vocab_put(vf_tokenizer *t, const char *s, size_t n, int id) {
    size_t i = vocab_slot(t, s, n);
    if (!t->vocab_keys[i]) {
        t->vocab_keys[i] = strndup(s, n);
        if (!t->vocab_keys[i]) return -1;
    }
    t->vocab_ids[i] = id;
    if (id + 1 > t->vocab_size) t->vocab_size = id + 1;
    return 0;
}

static size_t merge_slot(const vf_tokenizer *t, uint64_t key) {
    size_t i = hash_u64(key) & (t->merge_cap - 1);
    while (t->merge_keys[i] != EMPTY_KEY && t->merge_keys[i] != key) i = (i + 1) & (t->merge_cap - 1);
    return i;
}

static inline uint64_t pair_key(int a, int b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

/* Looks up the pair (a, b); returns 1 and its rank and merged id if known. */
static inline int merge_get(const vf_tokenizer *t, int a, int b, int *rank, int *new_id) {
    size_t i = merge_slot(t, pair_key(a, b));
    if (t->merge_keys[i] == EMPTY_KEY) return 0;
    *rank = t->merge_rank[i];
    *new_id = t->merge_new[i];
    return 1;
}

void vf_tokenizer_free(vf_tokenizer *t) {
    if (!t) return;
    if (t->vocab_keys)
        for (size_t i = 0; i < t->vocab_cap; i++) free(t->vocab_keys[i]);
    free(t->vocab_keys);
    free(t->vocab_ids);
    free(t->merge_keys);
    free(t->merge_rank);
    free(t->merge_new);
    free(t);
}

int vf_tokenizer_sot(const vf_tokenizer *t) { return t->sot; }
int vf_tokenizer_eot(const vf_tokenizer *t) { return t->eot; }
int vf_tokenizer_vocab_size(const vf_tokenizer *t) { return t->vocab_size; }
int vf_tokenizer_token_id(const vf_tokenizer *t, const char *token) { return vocab_get(t, token, strlen(token)); }
void vf_tokenizer_set_text_rules(vf_tokenizer *t, vf_tok_text_rules rules) { t->rules = rules; }
vf_tok_text_rules vf_tokenizer_text_rules(const vf_tokenizer *t) { return t->rules; }
const char *vf_tok_text_rules_name(vf_tok_text_rules rules) {
    return rules == VF_TOK_TEXT_OPEN_CLIP ? "open_clip" : "hf";
}
int vf_tok_text_rules_parse(const char *s, vf_tok_text_rules *rules, vf_error *err) {
    if (!strcmp(s, "hf")) *rules = VF_TOK_TEXT_HF;
    else if (!strcmp(s, "open_clip")) *rules = VF_TOK_TEXT_OPEN_CLIP;
    else return vf_fail(err, "text rules '%s': want hf or open_clip", s);
    return 0;
}

/* ---- fingerprint --------------------------------------------------------------- */

/* Token strings in id order; an id two strings share keeps the smaller
 * string (strcmp), so the result does not depend on hash-table order. */
static const char **tokens_by_id(const vf_tokenizer *t) {
    const char **by_id = calloc((size_t)t->vocab_size + 1, sizeof *by_id);
    if (!by_id) return NULL;
    for (size_t i = 0; i < t->vocab_cap; i++) {
        const char *s = t->vocab_keys[i];
        if (s && (!by_id[t->vocab_ids[i]] || strcmp(s, by_id[t->vocab_ids[i]]) < 0)) by_id[t->vocab_ids[i]] = s;
    }
    return by_id;
}

int vf_tokenizer_fingerprint(const vf_tokenizer *t, char hex[65], vf_error *err) {
    const char **by_id = tokens_by_id(t);
    uint64_t *merge_by_rank = malloc(sizeof(uint64_t) * ((size_t)t->n_merges + 1));
    if (!by_id || !merge_by_rank) {
        free(by_id);
        free(merge_by_rank);
        return vf_fail(err, "tokenizer fingerprint: out of memory");
    }
    for (size_t i = 0; i < t->merge_cap; i++)
        if (t->merge_keys[i] != EMPTY_KEY) merge_by_rank[t->merge_rank[i]] = t->merge_keys[i];
    vf_sha256_ctx c;
    vf_sha256_begin(&c);
    for (int id = 0; id < t->vocab_size; id++) {
        const char *s = by_id[id] ? by_id[id] : "";
        vf_sha256_add(&c, (const unsigned char *)s, strlen(s));
        vf_sha256_add(&c, (const unsigned char *)"\n", 1);
    }
    for (int r = 0; r < t->n_merges; r++) {
        const char *a = by_id[merge_by_rank[r] >> 32], *b = by_id[(uint32_t)merge_by_rank[r]];
        vf_sha256_add(&c, (const unsigned char *)a, strlen(a));
        vf_sha256_add(&c, (const unsigned char *)" ", 1);
        vf_sha256_add(&c, (const unsigned char *)b, strlen(b));
        vf_sha256_add(&c, (const unsigned char *)"\n", 1);
    }
    unsigned char d[32];
    vf_sha256_end(&c, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    free(by_id);
    free(merge_by_rank);
    return 0;
}

/* ---- building ---------------------------------------------------------------- */

/* Adds merge "a b" (byte-level strings); `where` names file and line for
 * errors.  A repeated pair keeps its first rank (transformers builds the fast
 * tokenizer from a dict's keys). */
static int add_merge(vf_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, const char *where,
                     vf_error *err) {
    char buf[1024];
    if (na + nb >= sizeof buf) return vf_fail(err, "%s: merge is too long", where);
    int ia = vocab_get(t, a, na), ib = vocab_get(t, b, nb);
    memcpy(buf, a, na);
    memcpy(buf + na, b, nb);
    int inew = vocab_get(t, buf, na + nb);
    if (ia < 0 || ib < 0 || inew < 0)
        return vf_fail(err, "%s: merge \"%.*s %.*s\" uses a token missing from the vocabulary (\"%.*s\")", where,
                       (int)na, a, (int)nb, b, ia < 0 ? (int)na : ib < 0 ? (int)nb : (int)(na + nb),
                       ia < 0 ? a : ib < 0 ? b : buf);
    size_t i = merge_slot(t, pair_key(ia, ib));
    if (t->merge_keys[i] != EMPTY_KEY) return 0;
    t->merge_keys[i] = pair_key(ia, ib);
    t->merge_rank[i] = t->n_merges++;
    t->merge_new[i] = inew;
    return 0;
}

/* Byte ids and specials, once vocabulary and merges are in. */
static int finish(vf_tokenizer *t, const char *name, vf_error *err) {
    int cp[256], order[256];
    vf_tok_byte_codepoints(cp, order);
    for (int b = 0; b < 256; b++) {
        char s[16];
        int n = vf_tok_utf8_put(s, cp[b]);
        t->byte_id[b] = vocab_get(t, s, n);
        memcpy(s + n, "</w>", 4);
        t->byte_eow_id[b] = vocab_get(t, s, n + 4);
    }
    t->sot = vf_tokenizer_token_id(t, VF_TOK_SOT_TEXT);
    t->eot = vf_tokenizer_token_id(t, VF_TOK_EOT_TEXT);
    t->unk = t->eot; /* CLIP's unk_token is <|endoftext|> */
    if (t->sot < 0 || t->eot < 0)
        return vf_fail(err, "%s: the vocabulary lacks %s", name, t->sot < 0 ? VF_TOK_SOT_TEXT : VF_TOK_EOT_TEXT);
    return 0;
}

/* Splits text into lines in place: lines[i] points at NUL-terminated lines. */
static size_t split_lines(char *text, char ***lines_out) {
    size_t n = 1;
    for (char *p = text; *p; p++) n += *p == '\n';
    char **lines = malloc(sizeof(char *) * n);
    if (!lines) return 0;
    size_t k = 0;
    lines[k++] = text;
    for (char *p = text; *p; p++)
        if (*p == '\n') {
            *p = 0;
            lines[k++] = p + 1;
        }
    *lines_out = lines;
    return k;
}

/* "a b" -> the two whitespace-separated fields (Python's str.split()). */
static int merge_fields(const char *line, const char **a, size_t *na, const char **b, size_t *nb) {
    const char *f[3];
    size_t fl[3];
    int k = 0;
    for (const char *p = line; *p;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\v' || *p == '\f') p++;
        if (!*p) break;
        const char *s = p;
        while (*p && !(*p == ' ' || *p == '\t' || *p == '\r' || *p == '\v' || *p == '\f')) p++;
        if (k == 3) return -1;
        f[k] = s;
        fl[k++] = (size_t)(p - s);
    }
    if (k != 2) return -1;
    *a = f[0], *na = fl[0], *b = f[1], *nb = fl[1];
    return 0;
}

static int load_merge_lines(vf_tokenizer *t, char **lines, size_t first, size_t end, const char *path,
                            vf_error *err) {
    for (size_t i = first; i < end; i++) {
        const char *a, *b;
        size_t na, nb;
        char where[4200];
        snprintf(where, sizeof where, "%s line %zu", path, i + 1);
        if (merge_fields(lines[i], &a, &na, &b, &nb))
            return vf_fail(err, "%s: expected two tokens separated by a space", where);
        if (add_merge(t, a, na, b, nb, where, err)) return -1;
    }
    return 0;
}

int vf_tokenizer_load_dir(vf_tokenizer **out, const char *model_dir, vf_error *err) {
    char vpath[4096], mpath[4096];
    snprintf(vpath, sizeof vpath, "%s/vocab.json", model_dir);
    snprintf(mpath, sizeof mpath, "%s/merges.txt", model_dir);
    char *vtext = NULL, *mtext = NULL, **lines = NULL;
    size_t vlen, mlen;
    cJSON *root = NULL;
    vf_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return vf_fail(err, "%s: out of memory", model_dir);
    if (vf_read_file(vpath, &vtext, &vlen, err) || vf_read_file(mpath, &mtext, &mlen, err)) goto fail;
    root = cJSON_Parse(vtext);
    if (!root || !cJSON_IsObject(root)) {
        vf_fail(err, "%s: malformed JSON (expected an object of token -> id)", vpath);
        goto fail;
    }
    /* transformers: merges_handle.read().strip().split("\n")[1:49152-256-2+1] */
    char *m = mtext, *mend = mtext + mlen;
    while (m < mend && (*m == ' ' || (*m >= '\t' && *m <= '\r'))) m++;
    while (mend > m && (mend[-1] == ' ' || (mend[-1] >= '\t' && mend[-1] <= '\r'))) *--mend = 0;
    size_t n_lines = split_lines(m, &lines);
    if (!n_lines) {
        vf_fail(err, "%s: out of memory", mpath);
        goto fail;
    }
    size_t end = n_lines < MAX_MERGES + 1 ? n_lines : MAX_MERGES + 1;
    if (tables_init(t, (size_t)cJSON_GetArraySize(root), end)) {
        vf_fail(err, "%s: out of memory", model_dir);
        goto fail;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (v < 0 || v >= (1 << 24) || v != floor(v)) {
            vf_fail(err, "%s: the id of token \"%s\" is not an integer in 0..16777215", vpath, e->string);
            goto fail;
        }
        if (vocab_put(t, e->string, strlen(e->string), (int)v)) {
            vf_fail(err, "%s: out of memory", vpath);
            goto fail;
        }
    }
    if (load_merge_lines(t, lines, 1, end, mpath, err) || finish(t, model_dir, err)) goto fail;
    cJSON_Delete(root);
    free(vtext);
    free(mtext);
    free(lines);
    *out = t;
    return 0;
fail:
    cJSON_Delete(root);
    free(vtext);
    free(mtext);
    free(lines);
    vf_tokenizer_free(t);
    return -1;
}

/* Whole gzip (or plain) file into a NUL-terminated buffer. */
static int read_gz(const char *path, char **data, size_t *len, vf_error *err) {
    gzFile f = gzopen(path, "rb");
    if (!f) return vf_fail_errno(err, path);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            gzclose(f);
            return vf_fail(err, "%s: out of memory", path);
        }
        int r = gzread(f, buf + n, (unsigned)(cap - n));
        if (r < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            vf_fail(err, "%s: corrupt gzip data: %s", path, msg);
            free(buf);
            gzclose(f);
            return -1;
        }
        n += (size_t)r;
        if (r == 0) break;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    gzclose(f);
    buf[n] = 0;
    if (strlen(buf) != n) {
        free(buf);
        return vf_fail(err, "%s: contains NUL bytes; not a BPE merges file", path);
    }
    *data = buf;
    *len = n;
    return 0;
}

int vf_tokenizer_load_bpe_gz(vf_tokenizer **out, const char *path, vf_error *err) {
    char *text = NULL, **lines = NULL;
    size_t len;
    vf_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return vf_fail(err, "%s: out of memory", path);
    if (read_gz(path, &text, &len, err)) goto fail;
    /* OpenAI: read().decode("utf-8").split('\n')[1:49152-256-2+1] */
    size_t n_lines = split_lines(text, &lines);
    size_t end = n_lines < MAX_MERGES + 1 ? n_lines : MAX_MERGES + 1;
    if (!n_lines || end < 2) {
        vf_fail(err, "%s: no merges found", path);
        goto fail;
    }
    if (tables_init(t, 512 + end + 2, end)) {
        vf_fail(err, "%s: out of memory", path);
        goto fail;
    }
    /* vocab = bytes, bytes + "</w>", one entry per merge, then the specials */
    int cp[256], order[256], id = 0;
    vf_tok_byte_codepoints(cp, order);
    for (int eow = 0; eow < 2; eow++)
        for (int i = 0; i < 256; i++) {
            char s[16];
            int n = vf_tok_utf8_put(s, cp[order[i]]);
            if (eow) memcpy(s + n, "</w>", 4), n += 4;
            if (vocab_put(t, s, n, id++)) goto oom;
        }
    for (size_t i = 1; i < end; i++) {
        const char *a, *b;
        size_t na, nb;
        char buf[1024];
        if (merge_fields(lines[i], &a, &na, &b, &nb) || na + nb >= sizeof buf) {
            vf_fail(err, "%s line %zu: expected two tokens separated by a space", path, i + 1);
            goto fail;
        }
        memcpy(buf, a, na);
        memcpy(buf + na, b, nb);
        if (vocab_put(t, buf, na + nb, id++)) goto oom;
    }
    if (vocab_put(t, VF_TOK_SOT_TEXT, strlen(VF_TOK_SOT_TEXT), id++) ||
        vocab_put(t, VF_TOK_EOT_TEXT, strlen(VF_TOK_EOT_TEXT), id++))
        goto oom;
    if (load_merge_lines(t, lines, 1, end, path, err) || finish(t, path, err)) goto fail;
    free(text);
    free(lines);
    *out = t;
    return 0;
oom:
    vf_fail(err, "%s: out of memory", path);
fail:
    free(text);
    free(lines);
    vf_tokenizer_free(t);
    return -1;
}

/* ---- BPE ------------------------------------------------------------------------ */

typedef struct bpe_merge { int rank, pos, new_id; } bpe_merge;

typedef struct bpe_work {
    int *c, *prev, *next;
    char *alive;
    bpe_merge *heap;
    size_t heap_n;
} bpe_work;

static inline int merge_less(bpe_merge a, bpe_merge b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static void heap_push(bpe_work *w, bpe_merge m) {
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(m, w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = m;
}

static bpe_merge heap_pop(bpe_work *w) {
    bpe_merge top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        bpe_merge best = last;
        if (l < n && merge_less(w->heap[l], best)) m = l, best = w->heap[l];
        if (r < n && merge_less(w->heap[r], best)) m = r;
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void push_pair(const vf_tokenizer *t, bpe_work *w, int pos) {
    int rank, new_id;
    if (merge_get(t, w->c[pos], w->c[w->next[pos]], &rank, &new_id)) heap_push(w, (bpe_merge){rank, pos, new_id});
}

/* BPE of one pre-token's bytes p[0, n); appends its ids to out. */
static void bpe_word(const vf_tokenizer *t, const unsigned char *p, size_t n, bpe_work *w, int32_t *out,
                     size_t *n_out) {
    for (size_t i = 0; i < n; i++) {
        int id = i + 1 < n ? t->byte_id[p[i]] : t->byte_eow_id[p[i]];
        w->c[i] = id < 0 ? t->unk : id;
        w->prev[i] = (int)i - 1;
        w->next[i] = i + 1 < n ? (int)i + 1 : -1;
        w->alive[i] = 1;
    }
    w->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, w, (int)i);
    while (w->heap_n) {
        bpe_merge top = heap_pop(w);
        int pos = top.pos;
        if (!w->alive[pos] || w->next[pos] < 0) continue;
        int right = w->next[pos], rank, new_id;
        /* stale entry: the pair at pos changed since it was pushed */
        if (!merge_get(t, w->c[pos], w->c[right], &rank, &new_id) || new_id != top.new_id) continue;
        w->c[pos] = top.new_id;
        w->alive[right] = 0;
        w->next[pos] = w->next[right];
        if (w->next[pos] >= 0) w->prev[w->next[pos]] = pos;
        if (w->prev[pos] >= 0) push_pair(t, w, w->prev[pos]);
        if (w->next[pos] >= 0) push_pair(t, w, pos);
    }
    for (int i = 0; i >= 0; i = w->next[i]) out[(*n_out)++] = w->c[i];
}

/* All ids of text (no SOT/EOT added) into a malloc'd array. */
static int encode_all(const vf_tokenizer *t, const char *text, int32_t **ids_out, size_t *n_out, vf_error *err) {
    char *norm = NULL;
    size_t norm_len, n_pieces, longest = 1, n = 0;
    vf_tok_piece *pieces = NULL;
    bpe_work w = {0};
    int32_t *ids = NULL;
    const int oc = t->rules == VF_TOK_TEXT_OPEN_CLIP;
    if (oc ? vf_tok_clean_open_clip(text, &norm, &norm_len, err) : vf_tok_normalize(text, &norm, &norm_len, err))
        return -1;
    if (vf_tok_split(norm, norm_len, oc, &pieces, &n_pieces, err)) {
        free(norm);
        return -1;
    }
    for (size_t i = 0; i < n_pieces; i++)
        if (pieces[i].len > longest) longest = pieces[i].len;
    ids = malloc(sizeof(int32_t) * (norm_len + 1));
    w.c = malloc(sizeof(int) * longest);
    w.prev = malloc(sizeof(int) * longest);
    w.next = malloc(sizeof(int) * longest);
    w.alive = malloc(longest);
    w.heap = malloc(sizeof(bpe_merge) * 3 * longest); /* n - 1 initial pairs + at most 2 per merge */
    int rc = -1;
    if (!ids || !w.c || !w.prev || !w.next || !w.alive || !w.heap) {
        vf_fail(err, "tokenizer: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_pieces; i++) {
        if (pieces[i].special) ids[n++] = pieces[i].special == 1 ? t->sot : t->eot;
        else bpe_word(t, (const unsigned char *)norm + pieces[i].start, pieces[i].len, &w, ids, &n);
    }
    *ids_out = ids;
    *n_out = n;
    ids = NULL;
    rc = 0;
done:
    free(ids);
    free(w.c);
    free(w.prev);
    free(w.next);
    free(w.alive);
    free(w.heap);
    free(pieces);
    free(norm);
    return rc;
}

int vf_tokenize(const vf_tokenizer *t, const char *text, int32_t *ids, int max_len, int *n_ids, int *truncated,
                vf_error *err) {
    if (max_len < 2) return vf_fail(err, "tokenizer: context length %d cannot hold SOT and EOT", max_len);
    int32_t *all;
    size_t n;
    if (encode_all(t, text, &all, &n, err)) return -1;
    size_t keep = n < (size_t)max_len - 2 ? n : (size_t)max_len - 2;
    ids[0] = t->sot;
    memcpy(ids + 1, all, sizeof(int32_t) * keep);
    ids[keep + 1] = t->eot;
    *n_ids = (int)keep + 2;
    if (truncated) *truncated = keep < n;
    free(all);
    return 0;
}

int vf_tokenize_words(const vf_tokenizer *t, const char *text, int32_t *ids, int max_ids, int *n_ids,
                      vf_error *err) {
    int32_t *all;
    size_t n;
    if (encode_all(t, text, &all, &n, err)) return -1;
    *n_ids = n > INT32_MAX ? INT32_MAX : (int)n;
    if (n > (size_t)(max_ids < 0 ? 0 : max_ids)) {
        free(all);
        int shown = 0; /* up to ~60 bytes, cut at a character boundary */
        while (text[shown] && (shown < 60 || ((unsigned char)text[shown] & 0xC0) == 0x80)) shown++;
        return vf_fail(err, "tokenizer: \"%.*s%s\" is %zu tokens, more than the %d allowed", shown, text,
                       text[shown] ? "..." : "", n, max_ids);
    }
    memcpy(ids, all, sizeof(int32_t) * n);
    free(all);
    return 0;
}

void vf_tok_byte_codepoints(int cp[256], int order[256]) {
    /* printable bytes stand for themselves; the others get 256, 257, ... in
     * byte order and come after them in the vocabulary */
    int k = 0, extra = 0;
    for (int b = 0; b < 256; b++) cp[b] = -1;
    for (int b = '!'; b <= '~'; b++) cp[b] = b, order[k++] = b;
    for (int b = 0xA1; b <= 0xAC; b++) cp[b] = b, order[k++] = b;
    for (int b = 0xAE; b <= 0xFF; b++) cp[b] = b, order[k++] = b;
    for (int b = 0; b < 256; b++)
        if (cp[b] < 0) cp[b] = 256 + extra++, order[k++] = b;
}
