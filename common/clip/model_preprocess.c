/* model_preprocess: which preprocessing a checkpoint directory asks for (see model_preprocess.h). */
#include "clip/model_preprocess.h"
#include "clip/open_clip_config.h"
#include "util/fileio.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int vf_model_preprocess_config(const char *model_dir, vf_preprocess_cfg *cfg, vf_error *err) {
    char path[4096];
    struct stat st;
    if (vf_open_clip_is_dir(model_dir)) return vf_open_clip_preprocess_config(model_dir, cfg, err);
    snprintf(path, sizeof path, "%s/preprocessor_config.json", model_dir);
    if (stat(path, &st) != 0) {
        snprintf(path, sizeof path, "%s/processor_config.json", model_dir);
        if (stat(path, &st) != 0)
            return vf_fail(err, "%s: neither preprocessor_config.json nor processor_config.json exists", model_dir);
    }
    char *json;
    size_t len;
    if (vf_read_file(path, &json, &len, err)) return -1;
    int rc = vf_preprocess_config_parse(json, path, cfg, err);
    free(json);
    return rc;
}
