/* model_preprocess: a directory's preprocessing through its checkpoint (see model_preprocess.h). */
#include "clip/model_preprocess.h"
#include "clip/checkpoint.h"

#include <stdlib.h>

int vf_model_preprocess_config(const char *model_dir, vf_preprocess_cfg *cfg, vf_error *err) {
    vf_checkpoint *ck = malloc(sizeof *ck);
    if (!ck) return vf_fail(err, "%s: out of memory", model_dir);
    int rc = vf_checkpoint_open_files(ck, model_dir, err) ? -1 : vf_checkpoint_preprocess(ck, cfg, err);
    vf_checkpoint_close(ck);  /* after a failed open there is nothing to close: harmless */
    free(ck);
    return rc;
}
