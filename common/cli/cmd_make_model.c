/* cmd_make_model: `vflclip make-model`, a random-weight CLIP model directory
 * in the Hugging Face layout (see clip/make_model.h). */
#include "cli/commands.h"
#include "clip/make_model.h"
#include "clip/open_clip_make.h" /* issue 5 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out, "usage: vflclip make-model --like tiny|vit-b-32|vit-b-16|vit-l-14|vit-l-14-336 --seed N --out DIR\n"
                 "       (OpenCLIP layout: --like rn50x4|rn50x16|rn50x64, --layout open_clip, --open-clip-config FILE)\n"
                 "                          [--dtype f32|f16|bf16]\n"
                 "Writes config.json, model.safetensors, preprocessor_config.json and a small byte-level\n"
                 "vocabulary (vocab.json, merges.txt) with seeded random weights.  Such a model is for tests\n"
                 "and demos only: its outputs mean nothing for dermatology.\n");
}

int vf_cmd_make_model(int argc, char **argv) {
    /* issue 5: OpenCLIP checkpoints (--like rn50x*, --layout open_clip, --open-clip-config) */
    if (vf_open_clip_make_wanted(argc, argv)) return vf_open_clip_make_main(argc, argv);
    const char *like = NULL, *out = NULL, *dtype_s = "f32";
    long long seed = -1;
    int config_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { usage(stdout); return 0; }
        else if (strcmp(a, "--config-only") == 0) config_only = 1; /* hidden: presets check */
        else if (!v) { fprintf(stderr, "make-model: %s needs a value\n", a); return 2; }
        else if (strcmp(a, "--like") == 0) like = argv[++i];
        else if (strcmp(a, "--out") == 0) out = argv[++i];
        else if (strcmp(a, "--dtype") == 0) dtype_s = argv[++i];
        else if (strcmp(a, "--seed") == 0) {
            char *end;
            seed = strtoll(argv[++i], &end, 10);
            if (*end || seed < 0) { fprintf(stderr, "make-model: --seed %s is not a non-negative integer\n", argv[i]); return 2; }
        } else { fprintf(stderr, "make-model: unknown option %s\n", a); usage(stderr); return 2; }
    }
    if (!like || !out || seed < 0) { usage(stderr); return 2; }
    vf_dtype dtype;
    if (strcasecmp(dtype_s, "f32") == 0) dtype = VF_DT_F32;
    else if (strcasecmp(dtype_s, "f16") == 0) dtype = VF_DT_F16;
    else if (strcasecmp(dtype_s, "bf16") == 0) dtype = VF_DT_BF16;
    else { fprintf(stderr, "make-model: --dtype %s is not f32, f16 or bf16\n", dtype_s); return 2; }
    vf_error err = {{0}};
    if (vf_make_model(like, (uint64_t)seed, dtype, out, config_only, &err) != 0) {
        fprintf(stderr, "make-model: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "make-model: wrote %s (%s, %s, seed %lld) -- RANDOM weights: outputs are meaningless for dermatology\n",
            out, like, dtype_s, seed);
    return 0;
}
