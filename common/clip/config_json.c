/* config_json: typed getters for JSON model configs (see config_json.h). */
#include "clip/config_json.h"

#include <math.h>

int vf_json_int(const cJSON *obj, const char *key, int *out, const char *name, const char *where, vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 1e9)
        return vf_fail(err, "%s: %s%s must be an integer", name, where, key);
    *out = (int)v->valuedouble;
    return 0;
}

int vf_json_float(const cJSON *obj, const char *key, float *out, const char *name, const char *where,
                         vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return vf_fail(err, "%s: %s%s must be a number", name, where, key);
    *out = (float)v->valuedouble;
    return 0;
}
