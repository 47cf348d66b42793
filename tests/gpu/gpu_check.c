/* gpu_check: the GPU-vs-CPU checker and GPU benchmark program that
 * tests/gpu/run.sh drives on a machine with a CUDA GPU.
 *
 *   gpu_check [--results FILE] [--seed N] COMMAND [options]
 *   info                       device and build facts
 *   ops                        every CUDA op vs kernels/cpu (forward, backward, finite differences)
 *   vit    --label L --width C --layers L --heads H --mlp F --image S --patch P --proj D [--act A] [--batch B]
 *   resnet --label L --rn-layers a,b,c,d --width W --image S --heads H --proj D [--batch B]
 *   coop   --label L --width C --layers L --heads H --mlp F --proj D [--act A]
 *   bench-vit (vit's options) --batch B --peak TFLOPS [--dir DIR]
 *   export-vit (vit's options) --dir DIR   no GPU needed: weights, pixels and the C tower's
 *                              embeddings, for bench_torch.py --check-only
 *
 * Without a GPU it prints one SKIP line and exits 0.  Exit 1 when a check
 * failed, 2 on bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "check_models.h"
#include "check_ops.h"
#include "cuda/cuda_backend.h"

typedef struct opts {
    const char *label, *act, *dir, *rn_layers;
    int width, layers, heads, mlp, image, patch, proj, batch;
    double peak;
} opts;

static int usage(const char *msg) {
    fprintf(stderr, "gpu_check: %s (see the comment at the top of tests/gpu/gpu_check.c)\n", msg);
    return 2;
}

static int parse(int argc, char **argv, int i, opts *o) {
    for (; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage("an option is missing its value");
        if (!strcmp(k, "--label")) o->label = v;
        else if (!strcmp(k, "--act")) o->act = v;
        else if (!strcmp(k, "--dir")) o->dir = v;
        else if (!strcmp(k, "--rn-layers")) o->rn_layers = v;
        else if (!strcmp(k, "--width")) o->width = atoi(v);
        else if (!strcmp(k, "--layers")) o->layers = atoi(v);
        else if (!strcmp(k, "--heads")) o->heads = atoi(v);
        else if (!strcmp(k, "--mlp")) o->mlp = atoi(v);
        else if (!strcmp(k, "--image")) o->image = atoi(v);
        else if (!strcmp(k, "--patch")) o->patch = atoi(v);
        else if (!strcmp(k, "--proj")) o->proj = atoi(v);
        else if (!strcmp(k, "--batch")) o->batch = atoi(v);
        else if (!strcmp(k, "--peak")) o->peak = atof(v);
        else return usage("unknown option");
    }
    return 0;
}

static int encoder_config(const opts *o, vf_clip_encoder_config *e) {
    if (o->width < 1 || o->layers < 0 || o->heads < 1 || o->width % o->heads) return usage("--width/--layers/--heads are invalid");
    e->hidden_size = o->width;
    e->intermediate_size = o->mlp > 0 ? o->mlp : 4 * o->width;
    e->num_layers = o->layers;
    e->num_heads = o->heads;
    e->layer_norm_eps = 1e-5f;
    e->act = VF_ACT_QUICK_GELU;
    if (o->act && !strcmp(o->act, "gelu")) e->act = VF_ACT_GELU;
    else if (o->act && !strcmp(o->act, "gelu_tanh")) e->act = VF_ACT_GELU_TANH;
    else if (o->act && strcmp(o->act, "quick_gelu")) return usage("--act must be quick_gelu, gelu or gelu_tanh");
    return 0;
}

int main(int argc, char **argv) {
    int i = 1;
    unsigned long long seed = 20261130;
    const char *results = NULL;
    while (i + 1 < argc && !strncmp(argv[i], "--", 2)) {
        if (!strcmp(argv[i], "--results")) results = argv[i + 1];
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10);
        else return usage("unknown option before the command");
        i += 2;
    }
    if (i >= argc) return usage("no command");
    const char *cmd = argv[i++];
    opts o = {.label = "model", .batch = 2, .peak = 790};
    if (parse(argc, argv, i, &o)) return 2;
    if (!strcmp(cmd, "export-vit")) {
        vf_clip_vision_config c = {0};
        if (encoder_config(&o, &c.enc)) return 2;
        c.image_size = o.image, c.patch_size = o.patch, c.num_channels = 3;
        if (o.patch < 1 || o.image % o.patch || o.proj < 1 || o.batch < 1 || !o.dir) return usage("export-vit needs --image/--patch/--proj/--dir");
        return vf_gpu_export_vit(&c, o.proj, o.batch, o.dir, seed) ? 1 : 0;
    }
    int n = vf_cuda_device_count();
    if (n < 1) {
        printf("SKIP gpu_check %s: no CUDA GPU or driver on this machine\n", cmd);
        return 0;
    }
    if (results && !(vf_check_results = fopen(results, "a"))) return usage("cannot open the --results file");
    vf_error err = {{0}};
    char desc[256];
    if (!strcmp(cmd, "info")) {
        if (vf_cuda_device_describe(0, desc, sizeof desc, &err)) return printf("device error: %s\n", err.msg), 1;
        char f[400];
        snprintf(f, sizeof f, "\"devices\":%d,\"device0\":\"%s\"", n, desc);
        vf_check_result("device", f);
    } else if (!strcmp(cmd, "ops")) {
        vf_cuda_ctx *ctx = NULL;
        if (vf_cuda_ctx_create(&ctx, 0, VF_CUDA_FP32, &err)) return printf("CHECK ops FAIL error=\"%s\"\n", err.msg), 1;
        vf_gpu_check_ops(ctx, seed);
        vf_cuda_ctx_free(ctx);
    } else if (!strcmp(cmd, "vit") || !strcmp(cmd, "bench-vit")) {
        vf_clip_vision_config c = {0};
        if (encoder_config(&o, &c.enc)) return 2;
        c.image_size = o.image, c.patch_size = o.patch, c.num_channels = 3;
        if (o.patch < 1 || o.image % o.patch || o.proj < 1 || o.batch < 1) return usage("--image/--patch/--proj/--batch are invalid");
        if (!strcmp(cmd, "vit")) vf_gpu_check_vit(o.label, &c, o.proj, o.batch, seed);
        else vf_gpu_bench_vit(o.label, &c, o.proj, o.batch, o.peak, o.dir, seed);
    } else if (!strcmp(cmd, "resnet")) {
        vf_resnet_config c;
        memset(&c, 0, sizeof c);
        if (!o.rn_layers || sscanf(o.rn_layers, "%d,%d,%d,%d", &c.layers[0], &c.layers[1], &c.layers[2], &c.layers[3]) != 4)
            return usage("--rn-layers needs four counts a,b,c,d");
        c.width = o.width, c.image_size = o.image, c.heads = o.heads, c.output_dim = o.proj;
        vf_gpu_check_resnet(o.label, &c, o.batch, seed);
    } else if (!strcmp(cmd, "coop")) {
        vf_clip_text_config c = {0};
        if (encoder_config(&o, &c.enc)) return 2;
        c.vocab_size = 49408, c.max_positions = 77, c.bos_token_id = 49406, c.eos_token_id = 49407, c.pad_token_id = 1;
        if (o.proj < 1) return usage("--proj is invalid");
        vf_gpu_check_coop(o.label, &c, o.proj, seed);
    } else {
        return usage("unknown command");
    }
    if (vf_check_results) fclose(vf_check_results);
    printf("# gpu_check %s: %d failure(s)\n", cmd, vf_check_failures);
    return vf_check_failures ? 1 : 0;
}
