/* tokenizer_text: the text side of CLIP's fast tokenizer.
 *
 * Normaliser (tokenizers' Sequence[NFC, Replace(\s+ -> " "), Lowercase]):
 * NFC is computed here from ICU's per-character data, limited to Unicode 9.0
 * as the reference's is (see nfc_knows); \s is Oniguruma's, i.e. the Unicode White_Space
 * property (so U+0085, U+00A0, U+3000 count, U+200B and U+001C do not);
 * lowercase is per character with the full mapping, which differs from
 * ICU's simple u_tolower only for U+0130 (-> "i\u0307").
 *
 * Pre-tokenizer: the specials are matched in the normalised text first (the
 * fast tokenizer's added-token pass), then each stretch between them is split
 * by  's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+  with
 * leftmost-first alternation, whitespace dropped.  The ByteLevel
 * pre-tokenizer's GPT-2 regex that follows in tokenizer.json never splits
 * these pieces further, so it is not repeated here. */
#include "clip/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/utf16.h>

int vf_tok_utf8_put(char *dst, int c) {
    unsigned char *d = (unsigned char *)dst;
    if (c < 0x80) { d[0] = (unsigned char)c; return 1; }
    if (c < 0x800) { d[0] = 0xC0 | (c >> 6); d[1] = 0x80 | (c & 0x3F); return 2; }
    if (c < 0x10000) {
        d[0] = 0xE0 | (c >> 12); d[1] = 0x80 | ((c >> 6) & 0x3F); d[2] = 0x80 | (c & 0x3F);
        return 3;
    }
    d[0] = 0xF0 | (c >> 18); d[1] = 0x80 | ((c >> 12) & 0x3F); d[2] = 0x80 | ((c >> 6) & 0x3F); d[3] = 0x80 | (c & 0x3F);
    return 4;
}

int vf_tok_utf8_get(const unsigned char *s, size_t n, size_t i, int *cp) {
    unsigned c = s[i];
    int len, min;
    if (c < 0x80) { *cp = (int)c; return 1; }
    if ((c & 0xE0) == 0xC0) len = 2, min = 0x80, c &= 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, min = 0x800, c &= 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, min = 0x10000, c &= 0x07;
    else return 0;
    if (i + len > n) return 0;
    for (int k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i + k] & 0x3F);
    }
    if ((int)c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = (int)c;
    return len;
}

static int is_space(int c) { return u_hasBinaryProperty(c, UCHAR_WHITE_SPACE); }

/* The general category as the reference sees it: the Oniguruma inside
 * tokenizers 0.19 has Unicode 14.0 tables, so characters ICU knows from a
 * later version (Kawi, Nag Mundari, CJK extension H...) are unassigned there. */
static int char_type(int c) {
    UVersionInfo age;
    u_charAge(c, age);
    if (age[0] > 14) return U_UNASSIGNED;
    return u_charType(c);
}

static int is_letter(int c) {
    int t = char_type(c);
    return t == U_UPPERCASE_LETTER || t == U_LOWERCASE_LETTER || t == U_TITLECASE_LETTER || t == U_MODIFIER_LETTER ||
           t == U_OTHER_LETTER;
}

static int is_number(int c) {
    int t = char_type(c);
    return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

/* Unicode version of the reference's normalisation data: the NFC inside
 * tokenizers 0.19 (crate unicode-normalization-alignments) carries Unicode
 * 9.0 tables, Python 3.11's unicodedata (ftfy's NFC, OpenCLIP mode) 14.0; so
 * characters added later neither decompose, compose nor reorder there
 * (canonical classes and mappings of older characters are stable across
 * versions, so filtering ICU's data by age reproduces them). */
static int nfc_knows(int c, int max_major) {
    UVersionInfo age;
    u_charAge(c, age);
    return age[0] <= max_major;
}

static int nfc_ccc(int c, int max_major) { return nfc_knows(c, max_major) ? u_getCombiningClass(c) : 0; }

int vf_tok_cps_push(vf_tok_cps *b, int32_t c) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        int32_t *nv = realloc(b->v, sizeof(int32_t) * cap);
        if (!nv) return -1;
        b->v = nv, b->cap = cap;
    }
    b->v[b->n++] = c;
    return 0;
}

/* NFC of cps[0, n) (UAX #15: full canonical decomposition, canonical
 * ordering, canonical composition), into out. */
int vf_tok_nfc(const int32_t *cps, size_t n, int max_major, vf_tok_cps *out, vf_error *err) {
    UErrorCode status = U_ZERO_ERROR;
    const UNormalizer2 *nfc2 = unorm2_getNFCInstance(&status);
    if (U_FAILURE(status)) return vf_fail(err, "tokenizer: ICU normalisation data unavailable (%s)", u_errorName(status));
    vf_tok_cps d = {0};
    for (size_t i = 0; i < n; i++) {
        UChar dec[32];
        int32_t dl = -1;
        status = U_ZERO_ERROR;
        if (nfc_knows(cps[i], max_major)) dl = unorm2_getDecomposition(nfc2, cps[i], dec, 32, &status);
        if (dl < 0 || U_FAILURE(status)) {
            if (vf_tok_cps_push(&d, cps[i])) goto oom;
            continue;
        }
        for (int32_t k = 0; k < dl;) {
            UChar32 c;
            U16_NEXT(dec, k, dl, c);
            if (vf_tok_cps_push(&d, c)) goto oom;
        }
    }
    /* canonical ordering: stable insertion sort of each run of non-starters */
    for (size_t i = 1; i < d.n; i++) {
        int cc = nfc_ccc(d.v[i], max_major);
        if (cc == 0) continue;
        UChar32 c = d.v[i];
        size_t j = i;
        while (j > 0 && nfc_ccc(d.v[j - 1], max_major) > cc) d.v[j] = d.v[j - 1], j--;
        d.v[j] = c;
    }
    /* composition: c joins the last starter unless blocked by a character in
     * between with class 0 or >= its own */
    out->n = 0;
    long starter = -1;
    int last_cc = 0;
    for (size_t i = 0; i < d.n; i++) {
        UChar32 c = d.v[i];
        int cc = nfc_ccc(c, max_major);
        if (starter >= 0) {
            int adjacent = (size_t)starter == out->n - 1;
            if (adjacent || (last_cc != 0 && last_cc < cc)) {
                UChar32 comp = unorm2_composePair(nfc2, out->v[starter], c);
                if (comp >= 0 && nfc_knows(comp, max_major)) {
                    out->v[starter] = comp;
                    continue;
                }
            }
        }
        if (cc == 0) starter = (long)out->n;
        last_cc = cc;
        if (vf_tok_cps_push(out, c)) goto oom;
    }
    free(d.v);
    return 0;
oom:
    free(d.v);
    return vf_fail(err, "tokenizer: out of memory");
}

int vf_tok_normalize(const char *text, char **out, size_t *out_len, vf_error *err) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text);
    int32_t *cps = malloc(sizeof(int32_t) * (n + 1));
    vf_tok_cps normal = {0};
    size_t ncp = 0;
    if (!cps) return vf_fail(err, "tokenizer: out of memory");
    for (size_t i = 0; i < n;) {
        int cp, len = vf_tok_utf8_get(s, n, i, &cp);
        if (!len) {
            free(cps);
            return vf_fail(err, "tokenizer: text is not valid UTF-8 (byte 0x%02x at offset %zu)", s[i], i);
        }
        cps[ncp++] = cp;
        i += len;
    }
    if (vf_tok_nfc(cps, ncp, 9, &normal, err)) {
        free(cps);
        return -1;
    }
    free(cps);
    /* a code point lowercases to at most 4 UTF-8 bytes (U+0130 -> 3) */
    char *res = malloc(normal.n * 4 + 1);
    if (!res) {
        free(normal.v);
        return vf_fail(err, "tokenizer: out of memory");
    }
    size_t o = 0;
    int in_space = 0;
    for (size_t i = 0; i < normal.n; i++) {
        UChar32 c = normal.v[i];
        if (is_space(c)) {
            if (!in_space) res[o++] = ' ';
            in_space = 1;
            continue;
        }
        in_space = 0;
        if (c == 0x130) { /* the one unconditional multi-character lowercase */
            o += vf_tok_utf8_put(res + o, 'i');
            o += vf_tok_utf8_put(res + o, 0x307);
        } else {
            o += vf_tok_utf8_put(res + o, u_tolower(c));
        }
    }
    res[o] = 0;
    free(normal.v);
    *out = res;
    *out_len = o;
    return 0;
}

/* Length of the regex match starting at s[i] (never 0 unless s[i] is
 * whitespace, which the split drops). */
static size_t match_at(const unsigned char *s, size_t n, size_t i) {
    static const char *const contractions[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    int c;
    size_t len = vf_tok_utf8_get(s, n, i, &c);
    if (c == '\'')
        for (int k = 0; k < 7; k++) {
            size_t cl = strlen(contractions[k]);
            if (i + 1 + cl <= n && memcmp(s + i + 1, contractions[k], cl) == 0) return 1 + cl;
        }
    if (is_letter(c)) {
        size_t j = i + len;
        while (j < n && (len = vf_tok_utf8_get(s, n, j, &c)) && is_letter(c)) j += len;
        return j - i;
    }
    if (is_number(c)) return len;
    if (is_space(c)) return 0;
    size_t j = i + len;
    while (j < n && (len = vf_tok_utf8_get(s, n, j, &c)) && !is_space(c) && !is_letter(c) && !is_number(c)) j += len;
    return j - i;
}

/* Which special (1 SOT, 2 EOT, 0 none) starts at s[i]; its length in *sl. */
static int special_at(const unsigned char *s, size_t n, size_t i, const char *sot_text, const char *eot_text, size_t *sl) {
    const size_t sot_len = strlen(sot_text), eot_len = strlen(eot_text);
    if (s[i] != '<') return 0;
    if (i + sot_len <= n && memcmp(s + i, sot_text, sot_len) == 0) return *sl = sot_len, 1;
    if (i + eot_len <= n && memcmp(s + i, eot_text, eot_len) == 0) return *sl = eot_len, 2;
    return 0;
}

/* Appends the regex pieces of s[a, b) to pieces; with specials (open_clip's
 * pattern "<start_of_text>|<end_of_text>|'s|..."), a special is the first
 * alternative at each match start, so one inside a run of punctuation is
 * not found (as in open_clip). */
static void split_plain(const unsigned char *s, size_t a, size_t b, const char *sot_text, const char *eot_text,
                        vf_tok_piece *pieces, size_t *np) {
    for (size_t i = a; i < b;) {
        size_t sl;
        int special = sot_text ? special_at(s, b, i, sot_text, eot_text, &sl) : 0;
        if (special) {
            pieces[(*np)++] = (vf_tok_piece){i, sl, special};
            i += sl;
            continue;
        }
        size_t m = match_at(s, b, i);
        if (m == 0) {
            int c;
            i += vf_tok_utf8_get(s, b, i, &c);
            continue;
        }
        pieces[(*np)++] = (vf_tok_piece){i, m, 0};
        i += m;
    }
}

int vf_tok_split(const char *norm, size_t len, int open_clip, vf_tok_piece **pieces, size_t *n_pieces, vf_error *err) {
    const unsigned char *s = (const unsigned char *)norm;
    vf_tok_piece *p = malloc(sizeof *p * (len + 1)); /* at most one piece per byte */
    if (!p) return vf_fail(err, "tokenizer: out of memory");
    size_t np = 0, seg = 0;
    if (open_clip) {
        split_plain(s, 0, len, VF_TOK_OC_SOT_TEXT, VF_TOK_OC_EOT_TEXT, p, &np);
        *pieces = p;
        *n_pieces = np;
        return 0;
    }
    /* the fast tokenizer's added-token pass: specials anywhere, then the regex between them */
    for (size_t i = 0; i < len; i++) {
        size_t sl;
        int special = special_at(s, len, i, VF_TOK_SOT_TEXT, VF_TOK_EOT_TEXT, &sl);
        if (!special) continue;
        split_plain(s, seg, i, NULL, NULL, p, &np);
        p[np++] = (vf_tok_piece){i, sl, special};
        i += sl - 1;
        seg = i + 1;
    }
    split_plain(s, seg, len, NULL, NULL, p, &np);
    *pieces = p;
    *n_pieces = np;
    return 0;
}
