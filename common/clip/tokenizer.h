/* tokenizer: CLIP's byte-level BPE tokenizer, producing exactly the ids of
 * the checkpoint's own library: Hugging Face's fast CLIPTokenizer
 * (tokenizers 0.19, as users load it) for a Hugging Face checkpoint, and
 * open_clip's SimpleTokenizer for an OpenCLIP one (vf_tokenizer_load_for_model
 * picks; see "text rules" below).
 *
 * Vocabularies: a Hugging Face directory (vocab.json + merges.txt) or
 * OpenAI's bpe_simple_vocab_16e6.txt.gz, from which the same 49,408-entry
 * vocabulary is built the way OpenAI's simple_tokenizer does.  The project's
 * own small vocabulary for random-weight models is written by
 * vf_tokenizer_write_tiny.
 *
 * Text pipeline, Hugging Face rules (the fast tokenizer's): NFC, every run of Unicode White_Space
 * -> one ' ', per-character full lowercase; the specials <|startoftext|> and
 * <|endoftext|> are found in the normalised text; the rest is split with
 *   's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * and each piece's UTF-8 bytes go through BPE with "</w>" on the last byte.
 * HTML entities are NOT unescaped ("&amp;" stays three tokens) because the
 * fast tokenizer does not.
 * OpenCLIP rules (open_clip's SimpleTokenizer, clean='lower'): ftfy.fix_text,
 * html.unescape twice, whitespace runs -> ' ', strip, str.lower(); its
 * specials are spelled <start_of_text> / <end_of_text> in text and are the
 * first alternatives of the same split regex; then the same BPE.  What of
 * ftfy is done and what is not: tokenizer_clean.c (in short, everything but
 * its mojibake repair).  Invalid UTF-8 is an error under both rules. */
#ifndef VF_CLIP_TOKENIZER_H
#define VF_CLIP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "util/vf_error.h"

#define VF_CLIP_CONTEXT_LENGTH 77

typedef struct vf_tokenizer vf_tokenizer;

/* Whose text rules a tokenizer follows (default: Hugging Face's). */
typedef enum { VF_TOK_TEXT_HF = 0, VF_TOK_TEXT_OPEN_CLIP = 1 } vf_tok_text_rules;
void vf_tokenizer_set_text_rules(vf_tokenizer *t, vf_tok_text_rules rules);
vf_tok_text_rules vf_tokenizer_text_rules(const vf_tokenizer *t);
const char *vf_tok_text_rules_name(vf_tok_text_rules rules);   /* "hf" / "open_clip" */
int vf_tok_text_rules_parse(const char *s, vf_tok_text_rules *rules, vf_error *err);

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
 * receives the directory or file it was loaded from.
 * The tokenizer then follows the checkpoint's library's text rules
 * (OpenCLIP when model_dir holds open_clip_config.json, else Hugging Face),
 * and must belong to the model (when model_dir has a config): its size fits
 * the token embedding (and equals it where no eos_token_id pins the
 * vocabulary down -- OpenCLIP, legacy configs -- unless the weights are
 * make-model's random ones, whose presets keep more rows than the small
 * vocabulary), its
 * EOT is where the model pools (config.json's eos_token_id, or the largest
 * id for OpenCLIP and transformers' legacy eos_token_id 2), its SOT is
 * bos_token_id / next to EOT, and a tokenizer directory's
 * special_tokens_map.json / tokenizer_config.json name CLIP's
 * <|startoftext|> and <|endoftext|>; else an error names the tokenizer
 * source, the model and what differs. */
int  vf_tokenizer_load_for_model(vf_tokenizer **out, const char *model_dir, const char *tokenizer_path, char *source,
                                 size_t source_len, vf_error *err);
/* The same for an open checkpoint (clip/checkpoint.h; vf_checkpoint_tokenizer
 * calls it): its vocabulary files, layout (text rules), config (vocabulary
 * size, bos/eos ids, random weights) and config path are taken from ck, not
 * read from the directory again.  vf_tokenizer_load_for_model is
 * vf_checkpoint_open_files + this + close (model_dir NULL: tokenizer_path
 * alone, Hugging Face's rules, nothing checked). */
struct vf_checkpoint;
int  vf_tokenizer_load_for_checkpoint(vf_tokenizer **out, const struct vf_checkpoint *ck, const char *tokenizer_path,
                                      char *source, size_t source_len, vf_error *err);
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
