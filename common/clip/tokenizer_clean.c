/* tokenizer_clean: open_clip's text cleaning, for OpenCLIP checkpoints.
 *
 * open_clip's SimpleTokenizer (tokenizer.py, clean='lower', the default)
 * runs, before its regex split:
 *     text = ftfy.fix_text(text)
 *     text = html.unescape(html.unescape(text)).strip()
 *     text = " ".join(text.split()).strip().lower()
 * Done here:
 *   - html.unescape exactly (Python 3.11's html module: every html5 named
 *     reference, the legacy ones without ';' by longest prefix, numeric
 *     references with its invalid-number rules), twice;
 *   - str.split()/strip() whitespace (str.isspace: Unicode White_Space plus
 *     U+001C..U+001F);
 *   - str.lower(): full lowercase per character with the Final_Sigma rule;
 *   - of ftfy.fix_text (6.2, default config), repeated until nothing
 *     changes as ftfy does: unescape_html (only when the text has no '<':
 *     ftfy's table, references ending in ';' plus upper-case forms such as
 *     &EACUTE;), fix_c1_controls (U+0080..U+009F read as Windows-1252),
 *     fix_latin_ligatures, fix_character_width (full/half-width forms ->
 *     NFKC), uncurl_quotes, remove_terminal_escapes, remove_control_chars,
 *     and NFC (Unicode 14.0 data, Python 3.11's).
 * Not done (ftfy only): fix_encoding -- the mojibake detector and its
 * helpers restore_byte_a0, replace_lossy_sequences and
 * decode_inconsistent_utf8 (text such as "sÃ³" that was UTF-8 decoded as
 * Latin-1 stays as it is here, where open_clip would turn it into "só") --
 * and fix_line_breaks / fix_surrogates, which cannot change the result (line
 * breaks become one space either way; invalid UTF-8 is refused).  ftfy also
 * cuts very long texts into segments; class names and prompts are far below
 * its segment length. */
#include "clip/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

/* Python 3.11's unicodedata is Unicode 14.0; newer characters are unassigned there. */
#define PY_UNICODE_MAJOR 14

static int py_knows(int c) {
    UVersionInfo age;
    u_charAge(c, age);
    return age[0] <= PY_UNICODE_MAJOR;
}

static int py_isspace(int c) { return (c >= 0x1C && c <= 0x1F) || u_hasBinaryProperty(c, UCHAR_WHITE_SPACE); }

static int push_utf8(vf_tok_cps *o, const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        int c, len = vf_tok_utf8_get(u, n, i, &c);
        if (!len || vf_tok_cps_push(o, c)) return -1;
        i += len;
    }
    return 0;
}

static const vf_tok_entity *find_entity(const vf_tok_entity *t, size_t n, const char *name, size_t len) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strncmp(t[mid].name, name, len);
        if (c == 0 && t[mid].name[len]) c = 1;   /* longer name sorts after */
        if (c == 0) return &t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_hex(int c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static int is_alnum_ascii(int c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* html.unescape's numeric rule for the number in digits [a, b) (base 10 or 16);
 * pushes the result (possibly nothing). */
static int push_charref(vf_tok_cps *o, const int32_t *v, size_t a, size_t b, int base) {
    long num = 0;
    for (size_t i = a; i < b; i++) {
        int d = is_digit(v[i]) ? v[i] - '0' : (v[i] | 0x20) - 'a' + 10;
        num = num * base + d;
        if (num > 0x10FFFF) num = 0x110000;   /* saturate: all past U+10FFFF are alike */
    }
    for (size_t k = 0; k < vf_tok_html_invalid_charref_count; k++)
        if (vf_tok_html_invalid_charrefs[k][0] == num) return vf_tok_cps_push(o, vf_tok_html_invalid_charrefs[k][1]);
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return vf_tok_cps_push(o, 0xFFFD);
    for (size_t k = 0; k < vf_tok_html_invalid_codepoint_count; k++)
        if (vf_tok_html_invalid_codepoints[k] == num) return 0;
    return vf_tok_cps_push(o, (int32_t)num);
}

/* Python's html.unescape on in, into out:
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)  */
static int html_unescape(const vf_tok_cps *in, vf_tok_cps *out) {
    const int32_t *v = in->v;
    const size_t n = in->n;
    out->n = 0;
    for (size_t i = 0; i < n;) {
        if (v[i] != '&') {
            if (vf_tok_cps_push(out, v[i++])) return -1;
            continue;
        }
        size_t j = i + 1;
        if (j < n && v[j] == '#') {
            int base = 10;
            size_t d = j + 1;
            if (d < n && (v[d] == 'x' || v[d] == 'X')) base = 16, d++;
            size_t e = d;
            while (e < n && (base == 16 ? is_hex(v[e]) : is_digit(v[e]))) e++;
            if (e > d) {
                if (push_charref(out, v, d, e, base)) return -1;
                i = e < n && v[e] == ';' ? e + 1 : e;
                continue;
            }
            if (vf_tok_cps_push(out, v[i++])) return -1;   /* "&#" with no digits: kept */
            continue;
        }
        /* named: up to 32 characters outside "\t\n\f <&#;", then an optional ';' */
        size_t e = j;
        while (e < n && e - j < 32 && v[e] != '\t' && v[e] != '\n' && v[e] != '\f' && v[e] != ' ' && v[e] != '<' &&
               v[e] != '&' && v[e] != '#' && v[e] != ';')
            e++;
        if (e == j) {
            if (vf_tok_cps_push(out, v[i++])) return -1;
            continue;
        }
        size_t end = e < n && v[e] == ';' ? e + 1 : e;   /* the match is v[j, end) */
        char name[40];
        size_t len = 0, ascii = 1;
        for (size_t k = j; k < end; k++) {
            if (v[k] > 0x7F) ascii = 0;
            else name[len] = (char)v[k];
            len++;
        }
        const vf_tok_entity *ent = NULL;
        size_t used = 0;
        if (ascii) {   /* every entity name is ASCII; a non-ASCII match can only match a prefix */
            ent = find_entity(vf_tok_html5_entities, vf_tok_html5_entity_count, name, len);
            used = len;
        } else {
            for (len = 0; j + len < end && v[j + len] <= 0x7F; len++) name[len] = (char)v[j + len];
            len++;   /* the longest-prefix loop below starts one shorter than this */
        }
        for (size_t x = (ent ? 0 : len - 1); !ent && x > 1; x--)
            if ((ent = find_entity(vf_tok_html5_entities, vf_tok_html5_entity_count, name, x))) used = x;
        if (!ent) {   /* '&' + the match, unchanged */
            for (size_t k = i; k < end; k++)
                if (vf_tok_cps_push(out, v[k])) return -1;
            i = end;
            continue;
        }
        if (push_utf8(out, ent->value)) return -1;
        i = j + used;   /* the rest of the match after the name is kept (the loop copies it) */
    }
    return 0;
}

/* ftfy's unescape_html: "&#?[0-9A-Za-z]{1,24};" from its table, or a numeric
 * reference html.unescape decodes whole. */
static int ftfy_unescape(const vf_tok_cps *in, vf_tok_cps *out) {
    const int32_t *v = in->v;
    const size_t n = in->n;
    out->n = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i + 1;
        int numeric = e < n && v[e] == '#';
        if (v[i] == '&') {
            if (numeric) e++;
            size_t s = e;
            while (e < n && e - s < 24 && is_alnum_ascii(v[e])) e++;
            if (e > s && e < n && v[e] == ';') {
                char name[32];
                size_t len = 0;
                for (size_t k = i + 1; k <= e; k++) name[len++] = (char)v[k];
                if (!numeric) {
                    const vf_tok_entity *ent = find_entity(vf_tok_ftfy_entities, vf_tok_ftfy_entity_count, name, len);
                    if (ent) {
                        if (push_utf8(out, ent->value)) return -1;
                        i = e + 1;
                        continue;
                    }
                } else {
                    /* html.unescape of "&#...;": decoded whole only when its digits are all of it */
                    int base = 10;
                    size_t d = s;
                    if (v[d] == 'x' || v[d] == 'X') base = 16, d++;
                    size_t k = d;
                    while (k < e && (base == 16 ? is_hex(v[k]) : is_digit(v[k]))) k++;
                    if (k > d && k == e) {
                        if (push_charref(out, v, d, e, base)) return -1;
                        i = e + 1;
                        continue;
                    }
                }
            }
        }
        if (vf_tok_cps_push(out, v[i++])) return -1;
    }
    return 0;
}

/* fix_latin_ligatures (ftfy.chardata.LIGATURES) */
static const char *ligature(int c) {
    switch (c) {
    case 0x132: return "IJ";
    case 0x133: return "ij";
    case 0x149: return "\xca\xbcn";
    case 0x1F1: return "DZ";
    case 0x1F2: return "Dz";
    case 0x1F3: return "dz";
    case 0x1C4: return "D\xc5\xbd";
    case 0x1C5: return "D\xc5\xbe";
    case 0x1C6: return "d\xc5\xbe";
    case 0x1C7: return "LJ";
    case 0x1C8: return "Lj";
    case 0x1C9: return "lj";
    case 0x1CA: return "NJ";
    case 0x1CB: return "Nj";
    case 0x1CC: return "nj";
    case 0xFB00: return "ff";
    case 0xFB01: return "fi";
    case 0xFB02: return "fl";
    case 0xFB03: return "ffi";
    case 0xFB04: return "ffl";
    case 0xFB05: return "\xc5\xbft";
    case 0xFB06: return "st";
    default: return NULL;
    }
}

/* remove_control_chars (ftfy.chardata.CONTROL_CHARS) */
static int ftfy_control(int c) {
    return (c <= 0x08) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
           c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

/* One pass of ftfy's per-character fixers, in its order, in into out. */
static int ftfy_chars(const vf_tok_cps *in, vf_tok_cps *out, vf_error *err) {
    vf_tok_cps a = {0};
    UErrorCode status = U_ZERO_ERROR;
    const UNormalizer2 *nfkc = unorm2_getNFKCInstance(&status);
    if (U_FAILURE(status)) return vf_fail(err, "tokenizer: ICU normalisation data unavailable (%s)", u_errorName(status));
    for (size_t i = 0; i < in->n; i++) {
        int c = in->v[i];
        if (c >= 0x80 && c <= 0x9F)   /* fix_c1_controls: Windows-1252 (html's table holds exactly that map) */
            for (size_t k = 0; k < vf_tok_html_invalid_charref_count; k++)
                if (vf_tok_html_invalid_charrefs[k][0] == c) { c = vf_tok_html_invalid_charrefs[k][1]; break; }
        const char *lig = ligature(c);
        if (lig) {
            if (push_utf8(&a, lig)) goto oom;
            continue;
        }
        if (c == 0x3000 || (c >= 0xFF01 && c <= 0xFFEE)) {   /* fix_character_width: ftfy's WIDTH_MAP is NFKC there */
            UChar src[2], dst[8];
            int32_t sl = 0;
            U16_APPEND_UNSAFE(src, sl, c);
            status = U_ZERO_ERROR;
            int32_t dl = unorm2_normalize(nfkc, src, sl, dst, 8, &status);
            if (U_SUCCESS(status) && py_knows(c)) {
                for (int32_t k = 0; k < dl;) {
                    UChar32 d;
                    U16_NEXT(dst, k, dl, d);
                    if (vf_tok_cps_push(&a, d)) goto oom;
                }
                continue;
            }
        }
        if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';   /* uncurl_quotes */
        else if (c >= 0x201C && c <= 0x201F) c = '"';
        if (vf_tok_cps_push(&a, c)) goto oom;
    }
    /* remove_terminal_escapes: \033\[[0-9;]*[a-zA-Z]; remove_control_chars */
    out->n = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (a.v[i] == 0x1B && i + 1 < a.n && a.v[i + 1] == '[') {
            size_t j = i + 2;
            while (j < a.n && (is_digit(a.v[j]) || a.v[j] == ';')) j++;
            if (j < a.n && a.v[j] < 0x80 && ((a.v[j] | 0x20) >= 'a' && (a.v[j] | 0x20) <= 'z')) {
                i = j;
                continue;
            }
        }
        if (ftfy_control(a.v[i])) continue;
        if (vf_tok_cps_push(out, a.v[i])) goto oom;
    }
    free(a.v);
    return 0;
oom:
    free(a.v);
    return vf_fail(err, "tokenizer: out of memory");
}

static int same(const vf_tok_cps *a, const vf_tok_cps *b) {
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof(int32_t)) == 0);
}

/* ftfy.fix_text with the fixers above, until a pass changes nothing. */
static int ftfy_fix(vf_tok_cps *t, vf_error *err) {
    int unescape = 1;
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i] == '<') unescape = 0;   /* unescape_html="auto" */
    vf_tok_cps a = {0}, b = {0};
    int rc = -1;
    for (int pass = 0; pass < 64; pass++) {
        if (unescape) {
            if (ftfy_unescape(t, &a)) goto oom;
        } else {
            a.n = 0;
            for (size_t i = 0; i < t->n; i++)
                if (vf_tok_cps_push(&a, t->v[i])) goto oom;
        }
        if (ftfy_chars(&a, &b, err) || vf_tok_nfc(b.v, b.n, PY_UNICODE_MAJOR, &a, err)) goto done;
        int fixed = same(&a, t);
        vf_tok_cps tmp = *t;
        *t = a;
        a = tmp;
        if (fixed) break;
    }
    rc = 0;
    goto done;
oom:
    vf_fail(err, "tokenizer: out of memory");
done:
    free(a.v);
    free(b.v);
    return rc;
}

/* Python's str.lower() of one code point with its neighbours (Final_Sigma). */
static int py_lower(const vf_tok_cps *t, size_t i, char *dst) {
    int c = t->v[i];
    if (!py_knows(c)) return vf_tok_utf8_put(dst, c);
    if (c == 0x3A3) {   /* final sigma: a cased letter before, none after (case-ignorables skipped) */
        int before = 0, after = 0;
        for (size_t k = i; k-- > 0;) {
            if (u_hasBinaryProperty(t->v[k], UCHAR_CASE_IGNORABLE)) continue;
            before = u_hasBinaryProperty(t->v[k], UCHAR_CASED);
            break;
        }
        for (size_t k = i + 1; k < t->n; k++) {
            if (u_hasBinaryProperty(t->v[k], UCHAR_CASE_IGNORABLE)) continue;
            after = u_hasBinaryProperty(t->v[k], UCHAR_CASED);
            break;
        }
        return vf_tok_utf8_put(dst, before && !after ? 0x3C2 : 0x3C3);
    }
    UChar src[2], low[8];
    int32_t sl = 0;
    U16_APPEND_UNSAFE(src, sl, c);
    UErrorCode status = U_ZERO_ERROR;
    int32_t ll = u_strToLower(low, 8, src, sl, "", &status);
    if (U_FAILURE(status)) return vf_tok_utf8_put(dst, c);
    int o = 0;
    for (int32_t k = 0; k < ll;) {
        UChar32 d;
        U16_NEXT(low, k, ll, d);
        o += vf_tok_utf8_put(dst + o, d);
    }
    return o;
}

int vf_tok_clean_open_clip(const char *text, char **out, size_t *out_len, vf_error *err) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text);
    vf_tok_cps t = {0}, u = {0};
    char *res = NULL;
    for (size_t i = 0; i < n;) {
        int cp, len = vf_tok_utf8_get(s, n, i, &cp);
        if (!len) {
            free(t.v);
            return vf_fail(err, "tokenizer: text is not valid UTF-8 (byte 0x%02x at offset %zu)", s[i], i);
        }
        if (vf_tok_cps_push(&t, cp)) goto oom;
        i += len;
    }
    if (ftfy_fix(&t, err)) goto fail;
    if (html_unescape(&t, &u) || html_unescape(&u, &t)) goto oom;
    /* " ".join(text.split()) then .lower(); a lowercase code point is at most 3 code points of 4 bytes */
    res = malloc(t.n * 12 + 1);
    if (!res) goto oom;
    size_t o = 0;
    int pending_space = 0;
    for (size_t i = 0; i < t.n; i++) {
        if (py_isspace(t.v[i])) {
            pending_space = o > 0;
            continue;
        }
        if (pending_space) res[o++] = ' ';
        pending_space = 0;
        o += py_lower(&t, i, res + o);
    }
    res[o] = 0;
    free(t.v);
    free(u.v);
    *out = res;
    *out_len = o;
    return 0;
oom:
    vf_fail(err, "tokenizer: out of memory");
fail:
    free(t.v);
    free(u.v);
    free(res);
    return -1;
}
