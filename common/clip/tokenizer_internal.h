/* tokenizer_internal: what the tokenizer's files share (not for callers).
 *   tokenizer.c       vocabulary loading, merge table, BPE, vf_tokenize
 *   tokenizer_text.c  normalisation (NFC, whitespace, lowercase; ICU data)
 *                     and the CLIP pre-tokenizer split
 *   tokenizer_tiny.c  the project's small vocabulary (a deterministic BPE
 *                     trainer over a built-in word list) */
#ifndef VF_CLIP_TOKENIZER_INTERNAL_H
#define VF_CLIP_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "clip/tokenizer.h"

#define VF_TOK_SOT_TEXT "<|startoftext|>"
#define VF_TOK_EOT_TEXT "<|endoftext|>"

/* One pre-token of the normalised text: bytes [start, start+len), or a
 * special token (special = 1 for SOT, 2 for EOT). */
typedef struct vf_tok_piece {
    size_t start, len;
    int special;
} vf_tok_piece;

/* NFC, White_Space runs -> ' ', per-character full lowercase (Rust's
 * char::to_lowercase, which tokenizers uses).  *out is malloc'd UTF-8. */
int vf_tok_normalize(const char *text, char **out, size_t *out_len, vf_error *err);
/* Specials first, then the CLIP regex; *pieces is malloc'd. */
int vf_tok_split(const char *norm, size_t len, vf_tok_piece **pieces, size_t *n_pieces, vf_error *err);

/* GPT-2's bytes_to_unicode: the code point that stands for byte b in
 * vocab.json, and the vocabulary order of the 256 bytes (order[i] = the byte
 * whose token has id i in OpenAI's vocabulary). */
void vf_tok_byte_codepoints(int cp[256], int order[256]);
/* Writes the UTF-8 form of code point c; returns its length (1..4). */
int vf_tok_utf8_put(char *dst, int c);

#endif
