/* fuzz_ini: the INI reader with its schema checks (common/daemon/ini_config)
 * on a daemon-like schema with every value type, read from a file as the
 * daemons do, then every typed getter on every key (paths with ${VAR}
 * expansion included); and the same text as a run configuration
 * (vf_run_config_parse: the text an admin sends in StartRunRequest.config,
 * parsed by the aggregator). */
#include "daemon/daemon_setup.h"
#include "daemon/ini_config.h"
#include "daemon/run_config.h"
#include "fuzz_util.h"

static const vf_ini_key schema[] = {
    VF_INI_TLS_KEYS,
    VF_INI_DIAL_KEYS,
    {"model", "dir", VF_INI_PATH, 0, NULL, "model"},
    {"model", "name", VF_INI_STR, 0, "x", "a string"},
    {"data", "max_pixels", VF_INI_INT, 0, "50000000", "an integer"},
    {"privacy", "clip", VF_INI_FLOAT, 0, "0", "a float"},
    {"privacy", "on", VF_INI_BOOL, 0, "false", "a bool"},
    VF_INI_STATE_KEYS,
    {NULL, NULL, 0, 0, NULL, NULL},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("party.ini", data, size);
    setenv("VF_FUZZ_HOME", "/nonexistent", 1);
    vf_ini ini;
    vf_error err;
    if (vf_ini_load(&ini, path, schema, &err) == 0) {
        for (const vf_ini_key *k = schema; k->key; k++) {
            long l;
            double d;
            int b;
            char out[4096];
            vf_ini_get(&ini, k->section, k->key);
            vf_ini_given(&ini, k->section, k->key);
            vf_ini_int(&ini, k->section, k->key, -1000000, 1000000, &l, &err);
            vf_ini_double(&ini, k->section, k->key, -1e9, 1e9, &d, &err);
            vf_ini_bool(&ini, k->section, k->key, &b, &err);
            vf_ini_path(&ini, k->section, k->key, 0, out, sizeof out, &err);
        }
    }
    vf_ini_free(&ini);

    char *text = fuzz_cstr(data, size);
    vf_run_config rc;
    vf_run_config_parse(text, "run config", &rc, &err);
    free(text);
    return 0;
}
