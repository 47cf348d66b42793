/* embed_cache: keyed on-disk embeddings and the batched encode that fills them. */
#include "data/embed_cache.h"
#include "formats/safetensors.h"
#include "image/image_io.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void vf_embed_cache_default_dir(char *dir, size_t size) {
    const char *v = getenv("VFLCLIP_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (v && *v) snprintf(dir, size, "%s", v);
    else if (x && *x) snprintf(dir, size, "%s/vflclip/embeddings", x);
    else snprintf(dir, size, "%s/.cache/vflclip/embeddings", h && *h ? h : "/tmp");
}

static void hex(const unsigned char *b, int n, char *out) {
    for (int i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

static int encode_cpu(void *ctx, const float *pixels, int B, float *out, vf_error *err) {
    return vf_vision_encode(ctx, pixels, B, out, err);
}

vf_image_encoder vf_image_encoder_cpu(vf_vision_tower *tower) {
    vf_image_encoder e = {.encode = encode_cpu, .ctx = tower, .image_size = tower->image_size,
                          .embed_dim = tower->embed_dim, .max_batch = tower->max_batch};
    memcpy(e.fingerprint, tower->fingerprint, sizeof e.fingerprint);
    snprintf(e.compute, sizeof e.compute, "%s", tower->cpu_bf16 ? "cpu-bf16" : "cpu-fp32"); /* bf16 matmuls: issue 18 */
    return e;
}

int vf_embed_cache_key(const vf_dataset *ds, vf_split s, const vf_image_encoder *enc, const vf_preprocess_cfg *pp,
                       char key[65], vf_error *err) {
    char head[1024];
    char fp[65], pp_fp[65];
    hex(enc->fingerprint, 32, fp);
    vf_preprocess_fingerprint(pp, pp_fp);
    int len = snprintf(head, sizeof head, "vflclip-embeddings-v2\nmodel=%s\ncompute=%s\nimage_size=%d\npreprocess=%s\nn=%d\n", fp,
                       enc->compute, enc->image_size, pp_fp, ds->split[s].n);
    vf_sha256_ctx c;
    vf_sha256_begin(&c);
    vf_sha256_add(&c, (const unsigned char *)head, (size_t)len);
    int rc = 0;
    for (int i = 0; i < ds->split[s].n && rc == 0; i++) {
        unsigned char h[32];
        rc = vf_dataset_image_hash(ds, s, i, h, err);
        vf_sha256_add(&c, h, 32);
    }
    unsigned char digest[32];
    vf_sha256_end(&c, digest);
    if (rc == 0) hex(digest, 32, key);
    return rc;
}

/* 1 when the file holds exactly this key's (N, D) embeddings (copied to out). */
static int cache_load(const char *path, const char *key, int N, int D, float *out) {
    vf_safetensors st;
    vf_error e;
    if (access(path, F_OK) != 0) return 0;   /* a plain miss */
    if (vf_st_open(&st, path, &e)) {
        vf_log(VF_WARN, "event=embed_cache_invalid file=%s reason=\"%s\"", path, e.msg);
        return 0;
    }
    int ok = 0;
    const char *k = vf_st_meta(&st, "key");
    int64_t shape[2] = {N, D};
    if (k && strcmp(k, key) == 0 && vf_st_read_f32(&st, "embeddings", 2, shape, out, &e) == 0) ok = 1;
    else vf_log(VF_WARN, "event=embed_cache_invalid file=%s reason=\"%s\"", path, k && strcmp(k, key) == 0 ? e.msg : "key mismatch");
    vf_st_close(&st);
    return ok;
}

static int cache_store(const char *dir, const char *path, const char *key, const vf_dataset *ds, vf_split s,
                       const vf_image_encoder *enc, int N, int D, const float *emb, vf_error *err) {
    if (vf_mkdirs(dir, 0755, err)) return -1;
    char fp[65];
    hex(enc->fingerprint, 32, fp);
    vf_st_writer w;
    vf_st_writer_init(&w);
    vf_st_writer_checksum(&w);   /* a state file: a torn or flipped copy is refused on load */
    int64_t shape[2] = {N, D};
    int rc = vf_st_writer_add_f32(&w, "embeddings", VF_DT_F32, 2, shape, emb, err);
    if (!rc) rc = vf_st_writer_meta(&w, "key", key, err);
    if (!rc) rc = vf_st_writer_meta(&w, "model_fingerprint", fp, err);
    if (!rc) rc = vf_st_writer_meta(&w, "compute", enc->compute, err);
    if (!rc) rc = vf_st_writer_meta(&w, "split", vf_split_name(s), err);
    if (!rc) rc = vf_st_writer_meta(&w, "source", ds->source, err);
    if (!rc) rc = vf_st_writer_save(&w, path, err);
    vf_st_writer_free(&w);
    return rc;
}

/* Decodes and preprocesses images [first, first + B) of split s into pixels (B, 3, S, S). */
static int prepare_batch(const vf_dataset *ds, vf_split s, int first, int B, const vf_preprocess_cfg *pp,
                         float *pixels, vf_error *err) {
    const vf_split_data *d = &ds->split[s];
    const size_t per_image = (size_t)3 * pp->crop_h * pp->crop_w;
    int failed = -1;
    vf_error first_err = {{0}};
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < B; b++) {
        int i = first + b;
        vf_error e = {{0}};
        vf_image img = {0}, view;
        int rc = 0;
        if (d->pixels) {
            view = vf_image_wrap((unsigned char *)d->pixels + (size_t)i * d->h * d->w * 3, d->w, d->h);
        } else {
            rc = vf_image_load(d->paths[i], &img, &e);
            view = img;
        }
        if (rc == 0) {
            rc = vf_preprocess(pp, &view, pixels + (size_t)b * per_image, &e);
            if (rc && d->paths) vf_error_prefix(&e, "%s", d->paths[i]);
        }
        vf_image_free(&img);
        if (rc) {
#pragma omp critical(vf_embed_err)
            if (failed < 0 || i < failed) { failed = i; first_err = e; }
        }
    }
    if (failed >= 0) {
        *err = first_err;
        return vf_error_prefix(err, "%s: %s image %d", ds->source, vf_split_name(s), failed);
    }
    return 0;
}

int vf_embed_split(const vf_dataset *ds, vf_split s, const vf_image_encoder *enc, const vf_preprocess_cfg *pp,
                   const char *cache_dir, float *out, vf_embed_stats *stats, vf_embed_progress progress,
                   void *progress_ctx, vf_error *err) {
    memset(stats, 0, sizeof *stats);
    const int N = ds->split[s].n, D = enc->embed_dim;
    if (N == 0) return 0;
    if (pp->crop_h != enc->image_size || pp->crop_w != enc->image_size)
        return vf_fail(err, "preprocessing crops %dx%d but the vision tower takes %dx%d images", pp->crop_h, pp->crop_w,
                       enc->image_size, enc->image_size);
    char path[4400] = "";
    if (cache_dir) {
        if (vf_embed_cache_key(ds, s, enc, pp, stats->key, err)) return -1;
        snprintf(path, sizeof path, "%s/%s.safetensors", cache_dir, stats->key);
        if (cache_load(path, stats->key, N, D, out)) {
            stats->cache_hit = 1;
            vf_log(VF_INFO, "event=embed_cache_hit split=%s images=%d encoded=0 file=%s", vf_split_name(s), N, path);
            return 0;
        }
    }
    const int B_max = enc->max_batch > 0 ? enc->max_batch : 1;
    float *pixels = malloc((size_t)B_max * 3 * pp->crop_h * pp->crop_w * sizeof *pixels);
    if (!pixels) return vf_fail(err, "out of memory for a batch of %d images", B_max);
    int rc = 0;
    for (int first = 0; first < N && rc == 0; first += B_max) {
        int B = N - first < B_max ? N - first : B_max;
        rc = prepare_batch(ds, s, first, B, pp, pixels, err);
        if (rc == 0) rc = enc->encode(enc->ctx, pixels, B, out + (size_t)first * D, err);
        if (rc == 0) {
            stats->encoded += B;
            if (progress) progress(progress_ctx, s, first + B, N);
        }
    }
    free(pixels);
    if (rc) return -1;
    vf_log(VF_INFO, "event=embed_encoded split=%s images=%d encoded=%d compute=%s cache=%s", vf_split_name(s), N,
           stats->encoded, enc->compute, cache_dir ? path : "off");
    if (cache_dir) {
        vf_error e;
        if (cache_store(cache_dir, path, stats->key, ds, s, enc, N, D, out, &e))
            vf_log(VF_WARN, "event=embed_cache_write_failed reason=\"%s\"", e.msg);
    }
    return 0;
}
