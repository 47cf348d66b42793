/* coop_options: option parsing shared by the CoOp commands (train, evaluate,
 * dataset): numbers with range checks. */
#ifndef VF_CLI_COOP_OPTIONS_H
#define VF_CLI_COOP_OPTIONS_H

#include "util/vf_error.h"

/* Each prints "vflclip: OPTION: ..." on stderr and returns -1 on a bad value. */
int vf_cli_parse_int(const char *opt, const char *v, int lo, int hi, int *out);
int vf_cli_parse_float(const char *opt, const char *v, float lo, float hi, float *out);
int vf_cli_parse_u64(const char *opt, const char *v, unsigned long long *out);

/* Class lists: util/name_list.h ("class list", at least 2). */

#endif
