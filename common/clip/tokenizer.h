/* tokenizer: CLIP's byte-level BPE tokenizer, producing exactly the ids of
 * Hugging Face's fast CLIPTokenizer (tokenizers 0.19, as users load it).
 *
 * Vocabularies: a Hugging Face directory (vocab.json + merges.txt) or
 * OpenAI's bpe_simple_vocab_16e6.txt.gz, from which the same 49,408-entry
 * vocabulary is built the way OpenAI's simple_tokenizer does.  The project's
 * own small vocabulary for random-weight models is written by
 * vf_tokenizer_write_tiny.
 *
 * Text pipeline (the fast tokenizer's): NFC, every run of Unicode White_Space
 * -> one ' ', per-character full lowercase; the specials <|startoftext|> and
 * <|endoftext|> are found in the normalised text; the rest is split with
 *   's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * and each piece's UTF-8 bytes go through BPE with "</w>" on the last byte.
 * HTML entities are NOT unescaped ("&amp;" stays three tokens) because the
 * fast tokenizer does not; OpenAI's original (ftfy + html.unescape) and
 * transformers' slow CLIPTokenizer do.  Invalid UTF-8 is an error. */
#ifndef VF_CLIP_TOKENIZER_H
#define VF_CLIP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "util/vf_error.h"

#define VF_CLIP_CONTEXT_LENGTH 77

typedef struct vf_tokenizer vf_tokenizer;

/* vocab.json + merges.txt from model_dir (merges beyond OpenAI's 48,894 are
 * ignored, as transformers' CLIPTokenizer does). */
int  vf_tokenizer_load_dir(vf_tokenizer **out, const char *model_dir, vf_error *err);
/* OpenAI's bpe_simple_vocab_16e6.txt.gz (gzip or plain text). */
int  vf_tokenizer_load_bpe_gz(vf_tokenizer **out, const char *path, vf_error *err);
/* The tokenizer for text work with the checkpoint in model_dir, tried in
 * this order: tokenizer_path when non-NULL (a directory holding vocab.json +
 * merges.txt, or a bpe_simple_vocab_16e6.txt.gz file); vocab.json +
 * merges.txt in model_dir; bpe_simple_vocab_16e6.txt.gz in model_dir.  When
 * none is there the message says what to provide and where to get it
 * (OpenCLIP hub checkpoints ship without a tokenizer).  source (may be NULL)
 * receives the directory or file it was loaded from. */
int  vf_tokenizer_load_for_model(vf_tokenizer **out, const char *model_dir, const char *tokenizer_path, char *source,
                                 size_t source_len, vf_error *err);
void vf_tokenizer_free(vf_tokenizer *t);
/* 64 hex digits of SHA-256 over the vocabulary itself: every token string
 * (vocab.json's byte-level spelling) in id order, each followed by '\n',
 * then every merge used ("a b\n") in rank order.  The same vocabulary has
 * the same fingerprint whether it came from vocab.json + merges.txt or from
 * bpe_simple_vocab_16e6.txt.gz (the knowledge party sends it in its Hello). */
int  vf_tokenizer_fingerprint(const vf_tokenizer *t, char hex[65], vf_error *err);
int  vf_tokenizer_sot(const vf_tokenizer *t);
int  vf_tokenizer_eot(const vf_tokenizer *t);
int  vf_tokenizer_vocab_size(const vf_tokenizer *t);

/* [SOT, tokens..., EOT], at most max_len ids (max_len >= 2); truncation keeps
 * EOT last and sets *truncated (which may be NULL). */
int  vf_tokenize(const vf_tokenizer *t, const char *text, int32_t *ids, int max_len, int *n_ids, int *truncated,
                 vf_error *err);

/* The BPE ids of text without SOT/EOT (for assembling CoOp prompts).  Fails
 * with a message when the text has more than max_ids tokens; *n_ids is then
 * the number it would need. */
int  vf_tokenize_words(const vf_tokenizer *t, const char *text, int32_t *ids, int max_ids, int *n_ids,
                       vf_error *err);

/* Id of a vocabulary entry as vocab.json spells it (byte-level form, e.g.
 * "cat</w>"), or -1. */
int  vf_tokenizer_token_id(const vf_tokenizer *t, const char *token);

/* Writes the project's small byte-level vocabulary into dir: vocab.json,
 * merges.txt, tokenizer_config.json and special_tokens_map.json (256 bytes,
 * their 256 "</w>" variants, merges learned deterministically from a built-in
 * English/dermatology word list, then the two specials).  transformers'
 * CLIPTokenizerFast and CLIPTokenizer load it.  Returns its size and the
 * special ids (sot = size - 2, eot = size - 1); any out pointer may be NULL. */
int  vf_tokenizer_write_tiny(const char *dir, int *vocab_size, int *sot_id, int *eot_id, vf_error *err);

#endif
