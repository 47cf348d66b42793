/* tokenizer_internal: what the tokenizer's files share (not for callers).
 *   tokenizer.c       vocabulary loading, merge table, BPE, vf_tokenize
 *   tokenizer_text.c  normalisation (NFC, whitespace, lowercase; ICU data)
 *                     and the CLIP pre-tokenizer split
 *   tokenizer_clean.c open_clip's text cleaning (ftfy subset, html.unescape,
 *                     whitespace, lowercase) for OpenCLIP checkpoints
 *   tokenizer_entities.c  the HTML character-reference tables it uses
 *   tokenizer_locate.c    which vocabulary goes with a checkpoint, which
 *                     library's text rules apply, and whether they match
 *   tokenizer_tiny.c  the project's small vocabulary (a deterministic BPE
 *                     trainer over a built-in word list) */
#ifndef VF_CLIP_TOKENIZER_INTERNAL_H
#define VF_CLIP_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "clip/tokenizer.h"

#define VF_TOK_SOT_TEXT "<|startoftext|>"
#define VF_TOK_EOT_TEXT "<|endoftext|>"
/* open_clip's SimpleTokenizer names its specials differently; in OpenCLIP
 * mode these (not the two above) are the special strings found in text. */
#define VF_TOK_OC_SOT_TEXT "<start_of_text>"
#define VF_TOK_OC_EOT_TEXT "<end_of_text>"

/* One pre-token of the normalised text: bytes [start, start+len), or a
 * special token (special = 1 for SOT, 2 for EOT). */
typedef struct vf_tok_piece {
    size_t start, len;
    int special;
} vf_tok_piece;

/* NFC, White_Space runs -> ' ', per-character full lowercase (Rust's
 * char::to_lowercase, which tokenizers uses).  *out is malloc'd UTF-8. */
int vf_tok_normalize(const char *text, char **out, size_t *out_len, vf_error *err);
/* The CLIP regex split of normalised text, *pieces malloc'd.  Specials:
 * open_clip = 0 (the fast tokenizer): <|startoftext|> / <|endoftext|> found
 * anywhere first; open_clip = 1 (SimpleTokenizer): <start_of_text> /
 * <end_of_text> as the regex's first alternatives. */
int vf_tok_split(const char *norm, size_t len, int open_clip, vf_tok_piece **pieces, size_t *n_pieces, vf_error *err);

/* open_clip's default text cleaning (tokenizer.py _clean_lower), as far as it
 * can be done without ftfy's mojibake detector: see tokenizer_clean.c.
 * *out is malloc'd UTF-8; invalid UTF-8 input is an error. */
int vf_tok_clean_open_clip(const char *text, char **out, size_t *out_len, vf_error *err);

/* Strict UTF-8 decoding of the sequence at s[i] (no overlongs, surrogates or
 * values past U+10FFFF): its length, or 0 when invalid. */
int vf_tok_utf8_get(const unsigned char *s, size_t n, size_t i, int *cp);

/* A growable code-point array. */
typedef struct vf_tok_cps {
    int32_t *v;
    size_t n, cap;
} vf_tok_cps;
int vf_tok_cps_push(vf_tok_cps *b, int32_t c);   /* 0, or -1 out of memory */
/* NFC of cps[0, n) into out (emptied first), with the normalisation data of
 * Unicode versions up to max_major only (characters added later neither
 * decompose, compose nor reorder), as a reference library of that version
 * sees it. */
int vf_tok_nfc(const int32_t *cps, size_t n, int max_major, vf_tok_cps *out, vf_error *err);

/* HTML character references (tokenizer_entities.c, generated from Python's
 * html module and ftfy): name without '&' -> UTF-8 value, sorted by strcmp. */
typedef struct vf_tok_entity {
    const char *name, *value;
} vf_tok_entity;
extern const vf_tok_entity vf_tok_html5_entities[];   /* html.entities.html5 */
extern const size_t vf_tok_html5_entity_count;
extern const vf_tok_entity vf_tok_ftfy_entities[];    /* ftfy.chardata.HTML_ENTITIES */
extern const size_t vf_tok_ftfy_entity_count;
extern const int vf_tok_html_invalid_charrefs[][2];   /* html._invalid_charrefs: number -> code point */
extern const size_t vf_tok_html_invalid_charref_count;
extern const int vf_tok_html_invalid_codepoints[];    /* html._invalid_codepoints, sorted */
extern const size_t vf_tok_html_invalid_codepoint_count;

/* GPT-2's bytes_to_unicode: the code point that stands for byte b in
 * vocab.json, and the vocabulary order of the 256 bytes (order[i] = the byte
 * whose token has id i in OpenAI's vocabulary). */
void vf_tok_byte_codepoints(int cp[256], int order[256]);
/* Writes the UTF-8 form of code point c; returns its length (1..4). */
int vf_tok_utf8_put(char *dst, int c);

#endif
