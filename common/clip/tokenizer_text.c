/* tokenizer_text: the text side of CLIP's fast tokenizer.
 *
 * Normaliser (tokenizers' Sequence[NFC, Replace(\s+ -> " "), Lowercase]):
 * NFC comes from ICU; \s is Oniguruma's, i.e. the Unicode White_Space
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

/* Decodes one UTF-8 sequence at s[i] (strict: no overlongs, surrogates or
 * values past U+10FFFF); returns its length, or 0 when invalid. */
static int utf8_get(const unsigned char *s, size_t n, size_t i, int *cp) {
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

static int is_letter(int c) {
    int t = u_charType(c);
    return t == U_UPPERCASE_LETTER || t == U_LOWERCASE_LETTER || t == U_TITLECASE_LETTER || t == U_MODIFIER_LETTER ||
           t == U_OTHER_LETTER;
}

static int is_number(int c) {
    int t = u_charType(c);
    return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

int vf_tok_normalize(const char *text, char **out, size_t *out_len, vf_error *err) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text);
    UChar *src = malloc(sizeof(UChar) * (2 * n + 1)), *dst = NULL;
    char *res = NULL;
    int32_t src_len = 0;
    if (!src) return vf_fail(err, "tokenizer: out of memory");
    if (n > (size_t)INT32_MAX / 8) {
        free(src);
        return vf_fail(err, "tokenizer: text of %zu bytes is too long", n);
    }
    for (size_t i = 0; i < n;) {
        int cp, len = utf8_get(s, n, i, &cp);
        if (!len) {
            free(src);
            return vf_fail(err, "tokenizer: text is not valid UTF-8 (byte 0x%02x at offset %zu)", s[i], i);
        }
        U16_APPEND_UNSAFE(src, src_len, cp);
        i += len;
    }
    UErrorCode status = U_ZERO_ERROR;
    const UNormalizer2 *nfc = unorm2_getNFCInstance(&status);
    if (U_FAILURE(status)) {
        free(src);
        return vf_fail(err, "tokenizer: ICU NFC data unavailable (%s)", u_errorName(status));
    }
    /* NFC expands at most 3x (a Unicode stability guarantee) */
    int32_t cap = 3 * src_len + 1;
    dst = malloc(sizeof(UChar) * cap);
    if (!dst) goto oom;
    int32_t dst_len = unorm2_normalize(nfc, src, src_len, dst, cap, &status);
    if (U_FAILURE(status)) {
        free(src);
        free(dst);
        return vf_fail(err, "tokenizer: NFC normalisation failed (%s)", u_errorName(status));
    }
    /* a UTF-16 unit lowercases to at most 4 UTF-8 bytes (U+0130 -> 3) */
    res = malloc((size_t)dst_len * 4 + 1);
    if (!res) goto oom;
    size_t o = 0;
    int in_space = 0;
    for (int32_t i = 0; i < dst_len;) {
        UChar32 c;
        U16_NEXT(dst, i, dst_len, c);
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
    free(src);
    free(dst);
    *out = res;
    *out_len = o;
    return 0;
oom:
    free(src);
    free(dst);
    return vf_fail(err, "tokenizer: out of memory");
}

/* Length of the regex match starting at s[i] (never 0 unless s[i] is
 * whitespace, which the split drops). */
static size_t match_at(const unsigned char *s, size_t n, size_t i) {
    static const char *const contractions[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    int c;
    size_t len = utf8_get(s, n, i, &c);
    if (c == '\'')
        for (int k = 0; k < 7; k++) {
            size_t cl = strlen(contractions[k]);
            if (i + 1 + cl <= n && memcmp(s + i + 1, contractions[k], cl) == 0) return 1 + cl;
        }
    if (is_letter(c)) {
        size_t j = i + len;
        while (j < n && (len = utf8_get(s, n, j, &c)) && is_letter(c)) j += len;
        return j - i;
    }
    if (is_number(c)) return len;
    if (is_space(c)) return 0;
    size_t j = i + len;
    while (j < n && (len = utf8_get(s, n, j, &c)) && !is_space(c) && !is_letter(c) && !is_number(c)) j += len;
    return j - i;
}

/* Appends the regex pieces of s[a, b) to pieces. */
static void split_plain(const unsigned char *s, size_t a, size_t b, vf_tok_piece *pieces, size_t *np) {
    for (size_t i = a; i < b;) {
        size_t m = match_at(s, b, i);
        if (m == 0) {
            int c;
            i += utf8_get(s, b, i, &c);
            continue;
        }
        pieces[(*np)++] = (vf_tok_piece){i, m, 0};
        i += m;
    }
}

int vf_tok_split(const char *norm, size_t len, vf_tok_piece **pieces, size_t *n_pieces, vf_error *err) {
    const unsigned char *s = (const unsigned char *)norm;
    vf_tok_piece *p = malloc(sizeof *p * (len + 1)); /* at most one piece per byte */
    if (!p) return vf_fail(err, "tokenizer: out of memory");
    size_t np = 0, seg = 0;
    const size_t sot_len = strlen(VF_TOK_SOT_TEXT), eot_len = strlen(VF_TOK_EOT_TEXT);
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '<') continue;
        int special = 0;
        size_t sl = 0;
        if (i + sot_len <= len && memcmp(s + i, VF_TOK_SOT_TEXT, sot_len) == 0) special = 1, sl = sot_len;
        else if (i + eot_len <= len && memcmp(s + i, VF_TOK_EOT_TEXT, eot_len) == 0) special = 2, sl = eot_len;
        if (!special) continue;
        split_plain(s, seg, i, p, &np);
        p[np++] = (vf_tok_piece){i, sl, special};
        i += sl - 1;
        seg = i + 1;
    }
    split_plain(s, seg, len, p, &np);
    *pieces = p;
    *n_pieces = np;
    return 0;
}
