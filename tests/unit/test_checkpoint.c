/* test_checkpoint: a checkpoint directory opened once (clip/checkpoint.h).
 * Both layouts as make-model writes them (Hugging Face: vf_make_model;
 * OpenCLIP: vf_open_clip_make_model): what the object reports (layout,
 * config, tensor map, fingerprint, preprocessing, vocabulary), that the
 * towers, the tokenizer and the preprocessing taken from it are those the
 * directory-taking entry points give; and corrupt inputs (a missing config,
 * a damaged safetensors header, both layouts' configs disagreeing, a
 * missing preprocessing or vocabulary) fail with one message naming the
 * file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "clip/checkpoint.h"
#include "clip/clip_model.h"
#include "clip/make_model.h"
#include "clip/model_preprocess.h"
#include "clip/open_clip_config.h"
#include "clip/open_clip_make.h"
#include "util/fileio.h"

/* reduced OpenCLIP shapes, as tests/python/test_open_clip.py's SMALL_RN / SMALL_VIT */
static const char SMALL_RN[] =
    "{\"embed_dim\": 48, \"quick_gelu\": true, \"vision_cfg\": {\"image_size\": 64, \"layers\": [1, 2, 1, 1], "
    "\"width\": 16, \"patch_size\": null}, \"text_cfg\": {\"context_length\": 77, \"vocab_size\": 1000, \"width\": 64, "
    "\"heads\": 2, \"layers\": 2}}";
static const char SMALL_VIT[] =
    "{\"embed_dim\": 40, \"quick_gelu\": true, \"vision_cfg\": {\"image_size\": 64, \"layers\": 2, \"width\": 96, "
    "\"patch_size\": 16, \"head_width\": 32}, \"text_cfg\": {\"context_length\": 77, \"vocab_size\": 1000, \"width\": 64, "
    "\"heads\": 4, \"layers\": 2}}";

typedef struct fixture {
    char root[64], hf[128], rn[128], vit[128];
} fixture;

static void path_in(char *out, size_t n, const char *dir, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static int make_open_clip(const char *json, const char *dir, vf_error *err) {
    vf_open_clip_config oc;
    return vf_open_clip_config_parse(json, "test config", &oc, err) || vf_open_clip_make_model(&oc, 7, VF_DT_F32, dir, err);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    vf_error err = {{0}};
    if (!f) return -1;
    snprintf(f->root, sizeof f->root, "/tmp/test_checkpoint.XXXXXX");
    if (!mkdtemp(f->root)) return -1;
    path_in(f->hf, sizeof f->hf, f->root, "hf");
    path_in(f->rn, sizeof f->rn, f->root, "rn");
    path_in(f->vit, sizeof f->vit, f->root, "vit");
    if (vf_make_model("tiny", 3, VF_DT_F32, f->hf, 0, &err) || make_open_clip(SMALL_RN, f->rn, &err) ||
        make_open_clip(SMALL_VIT, f->vit, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
    int rc = system(cmd);
    free(f);
    return rc ? -1 : 0;
}

/* A copy of src's files in root/name. */
static void copy_dir(const fixture *f, const char *src, const char *name, char *out, size_t n) {
    char cmd[512];
    path_in(out, n, f->root, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", out, src, out);
    assert_int_equal(system(cmd), 0);
}

static void write_in(const char *dir, const char *name, const void *data, size_t len) {
    char path[512];
    path_in(path, sizeof path, dir, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void remove_in(const char *dir, const char *name) {
    char path[512];
    path_in(path, sizeof path, dir, name);
    assert_int_equal(unlink(path), 0);
}

static void assert_contains(const char *msg, const char *needle) {
    if (!strstr(msg, needle)) fail_msg("\"%s\" not in \"%s\"", needle, msg);
}

/* What a directory-taking loader gives equals what the checkpoint gives. */
static void check_towers(const vf_checkpoint *ck, int image_size, vf_vision_kind kind) {
    vf_error err = {{0}};
    vf_vision_tower v, v_dir;
    vf_clip_text_tower t, t_dir;
    if (vf_vision_load_from(&v, ck, 2, &err) || vf_clip_text_load_from(&t, ck, &err)) fail_msg("%s", err.msg);
    assert_int_equal(v.kind, kind);
    assert_int_equal(v.image_size, image_size);
    assert_int_equal(v.embed_dim, ck->cfg.projection_dim);
    assert_ptr_equal(v.st, &ck->st);
    assert_null(v.own);
    assert_memory_equal(v.fingerprint, ck->fingerprint, VF_FINGERPRINT_LEN);
    assert_memory_equal(t.fingerprint, ck->fingerprint, VF_FINGERPRINT_LEN);
    /* the old entry points: the same fingerprint, their own checkpoint */
    if (vf_vision_load(&v_dir, ck->dir, 2, &err) || vf_clip_text_load(&t_dir, ck->dir, &err)) fail_msg("%s", err.msg);
    assert_non_null(v_dir.own);
    assert_memory_equal(v_dir.fingerprint, ck->fingerprint, VF_FINGERPRINT_LEN);
    assert_memory_equal(t_dir.fingerprint, ck->fingerprint, VF_FINGERPRINT_LEN);
    assert_true(t_dir.logit_scale == t.logit_scale);
    /* and the same embeddings */
    const int S = image_size, D = v.embed_dim;
    float *px = calloc((size_t)3 * S * S, sizeof *px), *a = calloc(D, sizeof *a), *b = calloc(D, sizeof *b);
    for (int i = 0; i < 3 * S * S; i++) px[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    if (vf_vision_encode(&v, px, 1, a, &err) || vf_vision_encode(&v_dir, px, 1, b, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(a, b, sizeof(float) * D);
    free(px), free(a), free(b);
    vf_vision_free(&v_dir);
    vf_clip_text_free(&t_dir);
    vf_vision_free(&v);
    vf_clip_text_free(&t);
}

static void test_hugging_face_layout(void **state) {
    fixture *f = *state;
    vf_checkpoint ck;
    vf_error err = {{0}};
    char want[512], fp[65];
    if (vf_checkpoint_open(&ck, f->hf, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ck.layout, VF_CKPT_HUGGING_FACE);
    assert_string_equal(vf_checkpoint_layout_name(ck.layout), "huggingface");
    path_in(want, sizeof want, f->hf, "config.json");
    assert_string_equal(ck.config_path, want);
    path_in(want, sizeof want, f->hf, "model.safetensors");
    assert_string_equal(ck.weights_path, want);
    assert_string_equal(ck.st.path, want);
    assert_true(ck.has_config && ck.has_weights && ck.has_preprocess);
    assert_true(ck.random_weights);
    assert_int_equal(ck.cfg.projection_dim, 32);
    assert_int_equal(ck.cfg.vision.image_size, 32);
    assert_non_null(vf_st_find(&ck.st, "text_projection.weight"));
    assert_non_null(vf_st_find(&ck.st, "logit_scale"));
    /* the fingerprint is vf_clip_fingerprint of the config and the tensor map */
    unsigned char raw[VF_FINGERPRINT_LEN];
    assert_int_equal(vf_clip_fingerprint(&ck.st, &ck.cfg, raw, &err), 0);
    assert_memory_equal(raw, ck.fingerprint, VF_FINGERPRINT_LEN);
    vf_fingerprint_hex(raw, fp);
    assert_string_equal(fp, ck.fingerprint_hex);
    assert_int_equal(strlen(fp), 64);
    /* preprocessing: preprocessor_config.json, as by directory */
    path_in(want, sizeof want, f->hf, "preprocessor_config.json");
    assert_string_equal(ck.preprocess_path, want);
    vf_preprocess_cfg pp, pp_dir;
    if (vf_checkpoint_preprocess(&ck, &pp, &err) || vf_model_preprocess_config(f->hf, &pp_dir, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(&pp, &pp_dir, sizeof pp);
    assert_int_equal(pp.crop_h, 32);
    assert_int_equal(pp.torchvision_crop, 0);
    vf_preprocess_fingerprint(&pp, fp);
    assert_string_equal(fp, ck.preprocess_fingerprint);
    /* vocabulary: the directory's own vocab.json + merges.txt, loaded when asked */
    assert_string_equal(ck.tokenizer_path, f->hf);
    vf_tokenizer *tok = NULL;
    char source[512];
    if (vf_checkpoint_tokenizer(&ck, NULL, &tok, source, sizeof source, &err)) fail_msg("%s", err.msg);
    assert_string_equal(source, f->hf);
    assert_true(vf_tokenizer_vocab_size(tok) > 256);
    vf_tokenizer_free(tok);
    check_towers(&ck, 32, VF_VISION_VIT);
    vf_checkpoint_close(&ck);
    assert_false(ck.has_weights);
}

static void test_open_clip_layouts(void **state) {
    fixture *f = *state;
    vf_checkpoint ck;
    vf_error err = {{0}};
    char want[512];
    if (vf_checkpoint_open(&ck, f->rn, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ck.layout, VF_CKPT_OPEN_CLIP);
    assert_string_equal(vf_checkpoint_layout_name(ck.layout), "open_clip");
    path_in(want, sizeof want, f->rn, "open_clip_config.json");
    assert_string_equal(ck.config_path, want);
    assert_string_equal(ck.preprocess_path, want);
    path_in(want, sizeof want, f->rn, "open_clip_model.safetensors");
    assert_string_equal(ck.weights_path, want);
    assert_true(ck.oc.is_resnet);
    assert_int_equal(ck.oc.embed_dim, 48);
    assert_int_equal(ck.cfg.projection_dim, 48);
    assert_int_equal(ck.cfg.text.eos_token_id, 2);   /* pooled at the largest id, as open_clip */
    assert_true(ck.random_weights && ck.cfg.random_weights);
    assert_non_null(vf_st_find(&ck.st, "visual.attnpool.c_proj.weight"));
    vf_preprocess_cfg pp, pp_dir;
    if (vf_checkpoint_preprocess(&ck, &pp, &err) || vf_model_preprocess_config(f->rn, &pp_dir, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(&pp, &pp_dir, sizeof pp);
    assert_int_equal(pp.crop_h, 64);
    assert_int_equal(pp.torchvision_crop, 1);
    assert_string_equal(ck.tokenizer_path, f->rn);
    check_towers(&ck, 64, VF_VISION_RESNET);
    vf_checkpoint_close(&ck);

    if (vf_checkpoint_open(&ck, f->vit, &err)) fail_msg("%s", err.msg);
    assert_false(ck.oc.is_resnet);
    assert_int_equal(ck.cfg.vision.patch_size, 16);
    check_towers(&ck, 64, VF_VISION_VIT);
    vf_checkpoint_close(&ck);
}

/* Only the small files: no tensor file opened, no config needed. */
static void test_files_only(void **state) {
    fixture *f = *state;
    vf_checkpoint ck;
    vf_error err = {{0}};
    char d[256];
    path_in(d, sizeof d, f->root, "pp-only");
    assert_int_equal(vf_mkdirs(d, 0755, &err), 0);
    const char pp[] = "{\"crop_size\": 48, \"size\": 48}";
    write_in(d, "preprocessor_config.json", pp, sizeof pp - 1);
    if (vf_checkpoint_open_files(&ck, d, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ck.layout, VF_CKPT_HUGGING_FACE);
    assert_false(ck.has_config);
    assert_false(ck.has_weights);
    assert_true(ck.has_preprocess);
    assert_int_equal(ck.pp.crop_h, 48);
    assert_string_equal(ck.tokenizer_path, "");
    /* what the towers would need is said when asked */
    assert_int_equal(vf_checkpoint_open_weights(&ck, &err), -1);
    assert_contains(err.msg, "config.json");
    vf_tokenizer *tok = NULL;
    assert_int_equal(vf_checkpoint_tokenizer(&ck, NULL, &tok, NULL, 0, &err), -1);
    assert_null(tok);
    assert_contains(err.msg, d);
    assert_contains(err.msg, "no tokenizer");
    vf_checkpoint_close(&ck);

    /* a complete directory opened in two steps reports what one step does */
    vf_checkpoint one, two;
    if (vf_checkpoint_open(&one, f->hf, &err) || vf_checkpoint_open_files(&two, f->hf, &err)) fail_msg("%s", err.msg);
    assert_false(two.has_weights);
    if (vf_checkpoint_open_weights(&two, &err)) fail_msg("%s", err.msg);
    assert_string_equal(one.fingerprint_hex, two.fingerprint_hex);
    vf_vision_tower v;
    assert_int_equal(vf_vision_load_from(&v, &two, 1, &err), 0);
    vf_vision_free(&v);
    vf_checkpoint_close(&one);
    vf_checkpoint_close(&two);
}

static void test_missing_config(void **state) {
    fixture *f = *state;
    vf_checkpoint ck;
    vf_error err = {{0}};
    char d[256], want[512];
    copy_dir(f, f->hf, "no-config", d, sizeof d);
    remove_in(d, "config.json");
    assert_int_equal(vf_checkpoint_open(&ck, d, &err), -1);
    path_in(want, sizeof want, d, "config.json");
    assert_contains(err.msg, want);
    assert_false(ck.has_weights);
    /* the directory-taking loaders say the same */
    vf_clip_text_tower t;
    vf_error err2 = {{0}};
    assert_int_equal(vf_clip_text_load(&t, d, &err2), -1);
    assert_string_equal(err.msg, err2.msg);
    /* a directory that is not there */
    path_in(d, sizeof d, f->root, "absent");
    assert_int_equal(vf_checkpoint_open(&ck, d, &err), -1);
    assert_contains(err.msg, d);
    /* an OpenCLIP config that does not parse fails at once, naming it */
    copy_dir(f, f->rn, "bad-oc", d, sizeof d);
    write_in(d, "open_clip_config.json", "{ nope", 6);
    assert_int_equal(vf_checkpoint_open_files(&ck, d, &err), -1);
    assert_contains(err.msg, "open_clip_config.json");
}

static void test_damaged_header(void **state) {
    fixture *f = *state;
    vf_checkpoint ck;
    vf_error err = {{0}};
    char d[256], want[512];
    copy_dir(f, f->hf, "bad-header", d, sizeof d);
    path_in(want, sizeof want, d, "model.safetensors");
    /* a header length past the end of the file */
    FILE *fp = fopen(want, "r+b");
    assert_non_null(fp);
    const unsigned char huge[8] = {0, 0, 0, 0, 0, 0, 0, 0x10};
    assert_int_equal(fwrite(huge, 1, 8, fp), 8);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(vf_checkpoint_open(&ck, d, &err), -1);
    assert_contains(err.msg, want);
    assert_false(ck.has_weights);
    /* a header that is not JSON */
    copy_dir(f, f->rn, "bad-json", d, sizeof d);
    path_in(want, sizeof want, d, "open_clip_model.safetensors");
    fp = fopen(want, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 8, SEEK_SET), 0);
    assert_int_equal(fwrite("#", 1, 1, fp), 1);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(vf_checkpoint_open(&ck, d, &err), -1);
    assert_contains(err.msg, want);
    /* no tensor file */
    copy_dir(f, f->hf, "no-weights", d, sizeof d);
    remove_in(d, "model.safetensors");
    assert_int_equal(vf_checkpoint_open(&ck, d, &err), -1);
    path_in(want, sizeof want, d, "model.safetensors");
    assert_contains(err.msg, want);
}

static void test_both_layouts(void **state) {
    fixture *f = *state;
    vf_checkpoint ck, vit;
    vf_error err = {{0}};
    char d[256], *text;
    size_t len;
    char hf_cfg[512];
    /* disagreeing: the tiny HF model's config.json beside the OpenCLIP ViT */
    copy_dir(f, f->vit, "both-disagree", d, sizeof d);
    path_in(hf_cfg, sizeof hf_cfg, f->hf, "config.json");
    assert_int_equal(vf_read_file(hf_cfg, &text, &len, &err), 0);
    write_in(d, "config.json", text, len);
    free(text);
    assert_int_equal(vf_checkpoint_open(&ck, d, &err), -1);
    assert_contains(err.msg, "config.json and ");
    assert_contains(err.msg, "open_clip_config.json describe different models");
    assert_contains(err.msg, "projection_dim 32, embed_dim 40");
    /* the preprocessing by directory says the same */
    vf_preprocess_cfg pp;
    vf_error err2 = {{0}};
    assert_int_equal(vf_model_preprocess_config(d, &pp, &err2), -1);
    assert_string_equal(err.msg, err2.msg);

    /* agreeing: a config.json of the same shapes (a hub repository with both) */
    if (vf_checkpoint_open(&vit, f->vit, &err)) fail_msg("%s", err.msg);
    char *json = vf_clip_config_to_json(&vit.cfg);
    copy_dir(f, f->vit, "both-agree", d, sizeof d);
    write_in(d, "config.json", json, strlen(json));
    free(json);
    if (vf_checkpoint_open(&ck, d, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ck.layout, VF_CKPT_OPEN_CLIP);
    assert_string_equal(ck.fingerprint_hex, vit.fingerprint_hex);
    vf_checkpoint_close(&ck);

    /* another library's config.json (not a CLIPModel config) is left alone */
    copy_dir(f, f->vit, "both-timm", d, sizeof d);
    const char timm[] = "{\"architecture\": \"vit_base_patch16_clip_224\", \"num_classes\": 0}";
    write_in(d, "config.json", timm, sizeof timm - 1);
    if (vf_checkpoint_open(&ck, d, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ck.layout, VF_CKPT_OPEN_CLIP);
    assert_string_equal(ck.fingerprint_hex, vit.fingerprint_hex);
    vf_checkpoint_close(&ck);
    vf_checkpoint_close(&vit);
}

static void test_missing_preprocessing_and_vocabulary(void **state) {
    fixture *f = *state;
    vf_checkpoint ck;
    vf_error err = {{0}};
    char d[256];
    copy_dir(f, f->hf, "bare", d, sizeof d);
    remove_in(d, "preprocessor_config.json");
    remove_in(d, "vocab.json");
    remove_in(d, "merges.txt");
    if (vf_checkpoint_open(&ck, d, &err)) fail_msg("%s", err.msg);  /* the towers need neither */
    assert_false(ck.has_preprocess);
    vf_preprocess_cfg pp;
    assert_int_equal(vf_checkpoint_preprocess(&ck, &pp, &err), -1);
    assert_contains(err.msg, d);
    assert_contains(err.msg, "neither preprocessor_config.json nor processor_config.json exists");
    assert_string_equal(ck.tokenizer_path, "");
    vf_tokenizer *tok = NULL;
    assert_int_equal(vf_checkpoint_tokenizer(&ck, NULL, &tok, NULL, 0, &err), -1);
    assert_contains(err.msg, "no tokenizer");
    /* an explicit vocabulary comes first */
    char source[512];
    if (vf_checkpoint_tokenizer(&ck, f->hf, &tok, source, sizeof source, &err)) fail_msg("%s", err.msg);
    assert_string_equal(source, f->hf);
    vf_tokenizer_free(tok);
    /* a damaged preprocessor file is named when the preprocessing is asked for */
    write_in(d, "preprocessor_config.json", "[1]", 3);
    vf_checkpoint_close(&ck);
    if (vf_checkpoint_open(&ck, d, &err)) fail_msg("%s", err.msg);
    assert_int_equal(vf_checkpoint_preprocess(&ck, &pp, &err), -1);
    assert_contains(err.msg, "preprocessor_config.json");
    vf_checkpoint_close(&ck);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hugging_face_layout),
        cmocka_unit_test(test_open_clip_layouts),
        cmocka_unit_test(test_files_only),
        cmocka_unit_test(test_missing_config),
        cmocka_unit_test(test_damaged_header),
        cmocka_unit_test(test_both_layouts),
        cmocka_unit_test(test_missing_preprocessing_and_vocabulary),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
