/* prompt: the CoOp prompt learner — class prompts with learnable context
 * vectors in place of words, through the frozen CLIP text tower.
 *
 * Each class prompt is assembled the way the CoOp repository does it, from a
 * template with a {ctx} slot and a {class} slot:
 *   [SOT] <template text before {ctx}> <slot> <template text after {class}> [EOT]
 * where <slot> is, by class position (CoOp's CLASS_TOKEN_POSITION):
 *   end:    p_1 .. p_n  <text between the slots>  <class tokens>
 *   middle: p_1 .. p_{n/2}  <class tokens>  p_{n/2+1} .. p_n
 *   front:  <class tokens>  p_1 .. p_n
 * (middle and front need {ctx} and {class} adjacent in the template).  The
 * p_j are learnable vectors of the token-embedding width W that replace
 * token embeddings; everything else is the frozen token embedding of the
 * tokenizer's ids.  Prompts run only up to the longest one's EOT
 * (T = max prompt length), since attention is causal.
 *
 * Context: n_ctx vectors shared by all classes, or with csc one set per
 * class (C * n_ctx).  Initialised N(0, 0.02) from the seed, or from words:
 * the token embeddings of init_words (n_ctx becomes their token count, as in
 * CoOp; an n_ctx that was stated and differs is refused, not overridden;
 * with csc every class starts from the same words).
 *
 * Owns: prompt token ids, context parameters, the text tower's activation
 * and gradient arenas for (C, T).  A forward/backward pair never allocates. */
#ifndef VF_COOP_PROMPT_H
#define VF_COOP_PROMPT_H

#include <stdint.h>
#include "clip/tokenizer.h"
#include "cpu/clip_text.h"
#include "util/vf_error.h"

/* CoOp's own prompt: the context vectors, then the class name. */
#define VF_COOP_DEFAULT_TEMPLATE "{ctx} {class}."

typedef enum { VF_CLASS_END = 0, VF_CLASS_MIDDLE, VF_CLASS_FRONT } vf_class_pos;

typedef struct vf_coop_config {
    int n_ctx;               /* default 16; ignored when init_words is given */
    int csc;                 /* class-specific contexts */
    vf_class_pos class_pos;
    const char *template_;   /* e.g. "a dermatoscopic image of {ctx} {class}."; NULL = VF_COOP_DEFAULT_TEMPLATE */
    const char *init_words;  /* NULL = random N(0, 0.02) with the seed; else e.g. "a photo of a" */
    unsigned long long seed;
    int n_ctx_given;         /* n_ctx was stated (--n-ctx): with init_words, their token count must equal it */
} vf_coop_config;

/* n_ctx 16, shared context, class at the end, CoOp's template, random init, seed 1. */
vf_coop_config vf_coop_config_default(void);
/* "end" / "middle" / "front". */
int vf_class_pos_parse(const char *s, vf_class_pos *pos, vf_error *err);
const char *vf_class_pos_name(vf_class_pos pos);

typedef struct vf_coop vf_coop;

/* Builds the C class prompts.  The tower and tokenizer must outlive the
 * learner.  Errors name the class or template that is at fault (missing
 * slot, prompt longer than 77 tokens, ...). */
int  vf_coop_create(vf_coop **out, const vf_coop_config *cfg, const vf_clip_text_weights *tower,
                    const vf_tokenizer *tok, const char *const *class_names, int n_classes, vf_error *err);
void vf_coop_free(vf_coop *c);

float *vf_coop_ctx(vf_coop *c);             /* the learnable context, (n_ctx_total, W), row-major */
int   vf_coop_ctx_count(const vf_coop *c);  /* number of floats: n_ctx_total * W */
int   vf_coop_ctx_rows(const vf_coop *c);   /* n_ctx_total = n_ctx (shared) or n_classes * n_ctx (csc) */
int   vf_coop_n_ctx(const vf_coop *c);      /* context vectors per prompt */
int   vf_coop_width(const vf_coop *c);      /* W, the token-embedding width */
int   vf_coop_n_classes(const vf_coop *c);
int   vf_coop_feature_dim(const vf_coop *c); /* D, the projected text-feature width */
int   vf_coop_seq_len(const vf_coop *c);    /* T, the longest prompt up to its EOT */
/* Token ids (T) of class k's prompt; the context slots hold the tokenizer's
 * "x" placeholder id (their embeddings are replaced); after EOT, EOT. */
const int32_t *vf_coop_prompt_ids(const vf_coop *c, int k);
/* Positions (n_ctx) of class k's context vectors in its prompt. */
const int *vf_coop_ctx_positions(const vf_coop *c, int k);
/* Copies ctx (rows, W) in, after checking the shape; `name` goes in errors. */
int vf_coop_set_ctx(vf_coop *c, const float *ctx, int rows, int width, const char *name, vf_error *err);

/* text_features (C, D): projected, not normalised, features of the C prompts
 * with the current context.  Keeps the activations for the backward. */
int vf_coop_text_forward(vf_coop *c, float *text_features, vf_error *err);
/* dctx (like ctx, overwritten) = dL/dctx given dtext = dL/dtext_features
 * (C, D), for the last vf_coop_text_forward. */
int vf_coop_text_backward(vf_coop *c, const float *dtext, float *dctx, vf_error *err);

#endif
