/* sealed_json: JSON state files with a checksum (see sealed_json.h).  The
 * checksum is over cJSON's compact print of the object: parsing and printing
 * again gives the same text (cJSON prints each double with the fewest digits
 * that read back to it), so a file read back checks against what was
 * written. */
#include "formats/sealed_json.h"
#include "util/fileio.h"
#include "util/sha256.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEAL_KEY "sha256"

static int digest_hex(const cJSON *o, char hex[65]) {
    char *text = cJSON_PrintUnformatted(o);
    if (!text) return -1;
    unsigned char d[32];
    vf_sha256(text, strlen(text), d);
    vf_sha256_to_hex(d, hex);
    free(text);
    return 0;
}

int vf_sealed_json_write(const char *path, cJSON *o, int keep_previous, vf_error *err) {
    char hex[65];
    cJSON_DeleteItemFromObjectCaseSensitive(o, SEAL_KEY);
    if (digest_hex(o, hex)) return vf_fail(err, "%s: out of memory", path);
    cJSON_AddStringToObject(o, SEAL_KEY, hex);
    char *text = cJSON_Print(o);
    if (!text) return vf_fail(err, "%s: out of memory", path);
    vf_atomic_file f;
    int rc = vf_atomic_open(&f, path, err);
    if (rc == 0) rc = vf_atomic_write(&f, text, strlen(text), err);
    free(text);
    if (rc) {
        vf_atomic_abort(&f);
        return -1;
    }
    if (!keep_previous) return vf_atomic_commit(&f, err);
    /* The file in force becomes .prev by renames (the two never share an
     * inode, so damage in place cannot reach both), and path never goes
     * missing in between. */
    char prev[4200];
    snprintf(prev, sizeof prev, "%s.prev", path);
    return vf_atomic_commit_keeping(&f, prev, err);
}

cJSON *vf_sealed_json_read(const char *path, vf_error *err) {
    char *text;
    size_t len;
    if (vf_read_file(path, &text, &len, err)) return NULL;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        vf_fail(err, "%s: not a JSON object (damaged or cut short)", path);
        return NULL;
    }
    cJSON *seal = cJSON_DetachItemFromObjectCaseSensitive(o, SEAL_KEY);
    char hex[65];
    int ok = cJSON_IsString(seal) && digest_hex(o, hex) == 0 && strcmp(hex, seal->valuestring) == 0;
    if (!ok) {
        vf_fail(err, "%s: %s", path, cJSON_IsString(seal) ? "does not match its sha256 checksum (damaged or edited)"
                                                            : "has no sha256 checksum");
        cJSON_Delete(o);
        o = NULL;
    }
    cJSON_Delete(seal);
    return o;
}
