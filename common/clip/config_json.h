/* config_json: typed getters for the JSON model configs (Hugging Face
 * config.json, open_clip_config.json).  An absent or null key keeps the
 * default already in *out; a key of the wrong type is an error naming the
 * file (`name`) and the key's path (`where` is the prefix up to the key, e.g.
 * "text_config." or "" at the top level). */
#ifndef VF_CLIP_CONFIG_JSON_H
#define VF_CLIP_CONFIG_JSON_H

#include <cJSON.h>
#include "util/vf_error.h"

/* An integer of magnitude at most 1e9. */
int vf_json_int(const cJSON *obj, const char *key, int *out, const char *name, const char *where, vf_error *err);
/* A finite number. */
int vf_json_float(const cJSON *obj, const char *key, float *out, const char *name, const char *where,
                         vf_error *err);

#endif
