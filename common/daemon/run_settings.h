/* run_settings: run_settings.json, the exact settings a training run ran
 * with, written into its run folder: by the aggregator when a federated run
 * starts (<state>/runs/<id>/run_settings.json) and by `vflclip train` into
 * its --out directory, through this one writer, so the two files have the
 * same fields:
 *   format                "vflclip-run-settings-1"
 *   program, software_version, run_id (null for `vflclip train`), written_unix
 *   run                   every [run] key (daemon/run_config.h) with the value
 *                         the run used, defaults resolved (template: null =
 *                         the knowledge party's own, which it then names)
 *   seeds                 seed (batch order, context initialisation, dL/dT
 *                         noise) and split_seed (CSV data sets split by seed)
 *   model_fingerprint, tokenizer_fingerprint, preprocessing_fingerprint
 *   knowledge_party, image_parties (federated), data (vflclip train)
 *   config_text           the run INI exactly as given (federated)
 * Written atomically (util/fileio.h). */
#ifndef VF_DAEMON_RUN_SETTINGS_H
#define VF_DAEMON_RUN_SETTINGS_H

#include "daemon/run_config.h"
#include "util/vf_error.h"

#ifndef VF_SOFTWARE_VERSION
#include "daemon/version.h"
#define VF_SOFTWARE_VERSION VF_VERSION
#endif

typedef struct vf_run_settings {
    const char *program;                       /* "vflclip-aggregator", "vflclip train" */
    const char *run_id;                        /* NULL: none */
    const vf_run_config *cfg;                  /* the resolved [run] values */
    const char *template_;                     /* the template used, when cfg's is "" (NULL: not known yet) */
    const char *config_text;                   /* the run INI as given; NULL: none */
    const char *model_fingerprint, *tokenizer_fingerprint, *preprocessing_fingerprint;   /* hex; NULL: unknown */
    const char *knowledge_party;               /* NULL: one process */
    const char *data;                          /* the data set (vflclip train); NULL: at the image parties */
    unsigned long long split_seed;
    const char *const *class_names;            /* (n_classes) or NULL */
    int n_classes;
} vf_run_settings;

/* <dir>/run_settings.json. */
int vf_run_settings_write(const char *dir, const vf_run_settings *s, vf_error *err);

#endif
