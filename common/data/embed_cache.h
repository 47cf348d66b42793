/* embed_cache: image embeddings of a data split, computed once and kept on
 * disk.  The vision tower is frozen, so an embedding depends only on the
 * model, how it is computed (fp32 on the CPU, bf16 on a GPU, ...), the
 * preprocessing and the image; the cache key is the SHA-256 of
 *   the model fingerprint, the compute label, every preprocessing parameter
 *   and the content hash of every image of the split, in order,
 * and the file is <cache_dir>/<key>.safetensors ("embeddings" (N, D) F32,
 * metadata: key, model fingerprint, split, source), written atomically.
 * A missing, unreadable or mismatching cache file is recomputed, never an
 * error. */
#ifndef VF_EMBED_CACHE_H
#define VF_EMBED_CACHE_H

#include "clip/clip_model.h"
#include "data/dataset.h"
#include "image/preprocess.h"
#include "util/vf_error.h"

/* Whatever turns preprocessed pixels (B, 3, S, S) into embeddings (B, D):
 * the CPU tower (vf_image_encoder_cpu) or a tower on another device. */
typedef struct vf_image_encoder {
    int (*encode)(void *ctx, const float *pixels, int B, float *out, vf_error *err);
    void *ctx;
    int image_size, embed_dim, max_batch;
    unsigned char fingerprint[32];
    char compute[64];   /* part of the cache key, e.g. "cpu-fp32", "cuda-bf16" */
} vf_image_encoder;

/* The CPU vision tower as an encoder (compute "cpu-fp32", or "cpu-bf16" once
 * vf_vision_set_cpu_bf16 switched it to bf16 matmuls). */
vf_image_encoder vf_image_encoder_cpu(vf_vision_tower *tower);

typedef struct vf_embed_stats {
    int cache_hit;      /* 1 when the split came from the cache */
    int encoded;        /* images run through the vision tower */
    char key[65];       /* cache key (hex) */
} vf_embed_stats;

/* Called after every encoded batch: done of total images. */
typedef void (*vf_embed_progress)(void *ctx, vf_split s, int done, int total);

/* out (N, D) = projected (not normalised) embeddings of every image of split
 * s.  cache_dir NULL disables the cache.  Images are decoded/preprocessed in
 * parallel (OpenMP) and encoded in batches of the tower's max_batch. */
int vf_embed_split(const vf_dataset *ds, vf_split s, const vf_image_encoder *enc, const vf_preprocess_cfg *pp,
                   const char *cache_dir, float *out, vf_embed_stats *stats, vf_embed_progress progress,
                   void *progress_ctx, vf_error *err);

/* The cache key (64 hex digits) of split s under this encoder and preprocessing. */
int vf_embed_cache_key(const vf_dataset *ds, vf_split s, const vf_image_encoder *enc, const vf_preprocess_cfg *pp,
                       char key[65], vf_error *err);

/* The default cache directory: $VFLCLIP_CACHE, else $XDG_CACHE_HOME/vflclip/embeddings,
 * else $HOME/.cache/vflclip/embeddings. */
void vf_embed_cache_default_dir(char *dir, size_t size);

#endif
