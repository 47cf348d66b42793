/* fuzz_model_config: a checkpoint's JSON configs, as read from a model
 * directory: config.json (Hugging Face CLIPModel, vf_clip_config_parse) and
 * open_clip_config.json (vf_open_clip_config_parse), both on every input.  A
 * config either parser accepts must survive its own writer: to_json, parsed
 * again, gives a config that is accepted too. */
#include "clip/clip_config.h"
#include "clip/open_clip_config.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fuzz_cstr(data, size);
    vf_error err;
    vf_clip_config cfg, again;
    if (vf_clip_config_parse(json, "config.json", &cfg, &err) == 0) {
        char *out = vf_clip_config_to_json(&cfg);
        if (!out) abort();
        if (vf_clip_config_parse(out, "written config.json", &again, &err)) {
            fprintf(stderr, "accepted config does not survive to_json: %s\n%s\n", err.msg, out);
            abort();
        }
        free(out);
    }
    vf_open_clip_config oc, oc2;
    if (vf_open_clip_config_parse(json, "open_clip_config.json", &oc, &err) == 0) {
        char *out = vf_open_clip_config_to_json(&oc);
        if (!out) abort();
        if (vf_open_clip_config_parse(out, "written open_clip_config.json", &oc2, &err)) {
            fprintf(stderr, "accepted open_clip config does not survive to_json: %s\n%s\n", err.msg, out);
            abort();
        }
        free(out);
        vf_open_clip_to_clip_config(&oc, &cfg);
    }
    free(json);
    return 0;
}
