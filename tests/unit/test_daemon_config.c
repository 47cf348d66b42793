/* test_daemon_config: the daemons' INI schema checks (common/daemon/) and
 * the run configuration.  Every mistake an operator can make in a config
 * file must come back as one line naming the file, the line and the key;
 * ${VAR} must expand from the environment (systemd's credential and state
 * directories) and fail clearly when the variable is unset; the run keys'
 * defaults must be `vflclip train`'s (adam 1e-3, sgd 2e-3, momentum 0.9,
 * batch 32, 10 epochs, 16 context vectors, seed 1). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/audit.h"
#include "daemon/ini_config.h"
#include "daemon/peer_limits.h"
#include "daemon/run_config.h"
#include "util/log.h"

static const vf_ini_key schema[] = {
    {"tls", "cert", VF_INI_PATH, 1, "cert.pem", "certificate"},
    {"model", "dir", VF_INI_PATH, 1, NULL, "model"},
    {"server", "port", VF_INI_INT, 0, "50051", "port"},
    {"server", "tls_only", VF_INI_BOOL, 0, "true", "flag"},
    {NULL, NULL, 0, 0, NULL, NULL},
};

static void expect_error(const char *text, const char *needle) {
    vf_ini ini;
    vf_error err = {{0}};
    assert_int_equal(vf_ini_load_string(&ini, text, "x.ini", "/etc/x", schema, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("error '%s' lacks '%s'", err.msg, needle);
}

static void test_schema_errors_name_file_line_and_key(void **state) {
    expect_error("[model]\ndir = m\n[server]\nprot = 1\n", "x.ini:4: unknown key [server] prot (known in [server]: port, tls_only)");
    expect_error("[model]\ndir = m\n[srv]\nport = 1\n", "x.ini:4: unknown section [srv]");
    expect_error("[model]\ndir = m\n; comment\ndir = n\n", "x.ini:4: [model] dir is given twice (first on line 2)");
    expect_error("[server]\nport = 1\n", "[model] dir is REQUIRED");
    expect_error("[model]\ndir = m\nthis is not ini\n", "x.ini:3: not an INI line");
}

/* libinih cuts a line of 200 characters or more in two: a long comment
 * line is read as nothing, a long value line is refused naming it (it used
 * to be read cut short and then fail as "not an INI line" one line later). */
static void test_long_lines(void **state) {
    char text[1200], fill[600];
    memset(fill, 'x', 450);
    fill[450] = 0;
    vf_ini ini;
    vf_error err = {{0}};
    snprintf(text, sizeof text, "[model]\n; %s\n   # %s\ndir = m\n", fill, fill);
    assert_int_equal(vf_ini_load_string(&ini, text, "x.ini", "/etc/x", schema, &err), 0);
    assert_string_equal(vf_ini_get(&ini, "model", "dir"), "m");
    vf_ini_free(&ini);
    snprintf(text, sizeof text, "[model]\n; short\ndir = %.195s\n", fill);   /* 201 characters */
    expect_error(text, "x.ini:3: a line of 201 characters; the INI reader takes lines of at most 199");
    snprintf(text, sizeof text, "[model]\ndir = %.193s\n", fill);             /* 199: the longest that is read */
    assert_int_equal(vf_ini_load_string(&ini, text, "x.ini", "/etc/x", schema, &err), 0);
    assert_int_equal(strlen(vf_ini_get(&ini, "model", "dir")), 193);
    vf_ini_free(&ini);
}

static void test_typed_values_and_defaults(void **state) {
    vf_ini ini;
    vf_error err = {{0}};
    assert_int_equal(vf_ini_load_string(&ini, "[model]\ndir = m\n[server]\nport = 70000\ntls_only = maybe\n", "x.ini", "/etc/x", schema, &err), 0);
    long v;
    int b;
    assert_int_equal(vf_ini_int(&ini, "server", "port", 1, 65535, &v, &err), -1);
    assert_non_null(strstr(err.msg, "x.ini:4: [server] port = '70000' is not an integer in 1..65535"));
    assert_int_equal(vf_ini_bool(&ini, "server", "tls_only", &b, &err), -1);
    assert_non_null(strstr(err.msg, "x.ini:5: [server] tls_only = 'maybe' is not a boolean"));
    char path[4096];
    assert_int_equal(vf_ini_path(&ini, "tls", "cert", 0, path, sizeof path, &err), 0);
    assert_string_equal(path, "/etc/x/cert.pem");            /* default, relative to the file */
    assert_int_equal(vf_ini_path(&ini, "model", "dir", 1, path, sizeof path, &err), -1);
    assert_non_null(strstr(err.msg, "[model] dir = /etc/x/m"));  /* must exist: it does not */
    vf_ini_free(&ini);
}

static void test_environment_expansion(void **state) {
    vf_ini ini;
    vf_error err = {{0}};
    setenv("VF_TEST_CREDS", "/run/creds/agg", 1);
    unsetenv("VF_TEST_UNSET");
    assert_int_equal(vf_ini_load_string(&ini, "[tls]\ncert = ${VF_TEST_CREDS}/cert.pem\n[model]\ndir = ${VF_TEST_UNSET}/m\n",
                                        "x.ini", "/etc/x", schema, &err), 0);
    char path[4096];
    assert_int_equal(vf_ini_path(&ini, "tls", "cert", 0, path, sizeof path, &err), 0);
    assert_string_equal(path, "/run/creds/agg/cert.pem");
    assert_int_equal(vf_ini_path(&ini, "model", "dir", 0, path, sizeof path, &err), -1);
    assert_non_null(strstr(err.msg, "environment variable VF_TEST_UNSET is not set"));
    vf_ini_free(&ini);
}

static void test_run_config_defaults_are_train_defaults(void **state) {
    vf_run_config rc;
    vf_error err = {{0}};
    assert_int_equal(vf_run_config_parse("", "run", &rc, &err), 0);
    assert_int_equal(rc.epochs, 10);
    assert_int_equal(rc.batch_size, 32);
    assert_int_equal(rc.n_ctx, 16);
    assert_true(rc.seed == 1);
    assert_int_equal(rc.optim.kind, VF_OPT_ADAM);
    assert_true(fabsf(rc.schedule.base_lr - 1e-3f) < 1e-9f);
    assert_int_equal(rc.schedule.warmup, VF_WARMUP_NONE);
    assert_int_equal(rc.n_parties, 0);
    assert_int_equal(vf_run_config_parse("[run]\noptimizer = sgd\nimage_parties = b, a\n", "run", &rc, &err), 0);
    assert_true(fabsf(rc.schedule.base_lr - 2e-3f) < 1e-9f);
    assert_true(fabsf(rc.optim.momentum - 0.9f) < 1e-7f);
    assert_int_equal(rc.n_parties, 2);
    assert_string_equal(rc.parties[0], "b");
    assert_string_equal(rc.parties[1], "a");
    assert_int_equal(vf_run_config_parse("[run]\nimage_parties = a,a\n", "run", &rc, &err), -1);
    assert_non_null(strstr(err.msg, "'a' listed twice"));
    assert_int_equal(vf_run_config_parse("[run]\noptimizer = lion\n", "run.ini", &rc, &err), -1);
    assert_non_null(strstr(err.msg, "run.ini: [run] optimizer"));
    assert_int_equal(vf_run_config_parse("[run]\nclass_pos = left\n", "run.ini", &rc, &err), -1);
    assert_non_null(strstr(err.msg, "[run] class_pos"));
}


/* A detail that carries a newline and a fake event stays one audit line. */
static void test_audit_line_cannot_be_forged(void **state) {
    char path[] = "/tmp/vf_audit_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    vf_error err;
    assert_int_equal(vf_audit(path, "run_start_refused", NULL, "refused=\"x\n2026-01-01T00:00:00Z event=run_start role=admin\"", &err), 0);
    FILE *f = fopen(path, "r");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    unlink(path);
    buf[n] = 0;
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += buf[i] == '\n';
    printf("audit: %s", buf);
    assert_int_equal(lines, 1);
    assert_non_null(strstr(buf, "x\\n2026"));
}

static void test_log_quote_escapes_what_could_end_a_value(void **state) {
    char out[64];
    assert_string_equal(vf_log_quote(out, sizeof out, "a\"b\\c\nd\x01"), "a\\\"b\\\\c\\nd\\x01");
    assert_string_equal(vf_log_quote(out, 6, "abcdefgh"), "abcde");
    assert_string_equal(vf_log_quote(out, 4, "\n\n"), "\\n");   /* an escape is never cut in half */
}

static void test_peer_names_and_text(void **state) {
    vf_error err;
    assert_int_equal(vf_peer_check_name("id", "ISIC_0024306", &err), 0);
    assert_int_equal(vf_peer_check_name("id", "a\"b", &err), -1);
    assert_non_null(strstr(err.msg, "id has a control character, quote or backslash at byte 1"));
    char big[400];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(vf_peer_check_name("class name", big, &err), -1);
    assert_non_null(strstr(err.msg, "longer than 256"));
    char text[] = "line1\nline2 \"q\"";
    vf_peer_sanitize_text(text);
    assert_string_equal(text, "line1?line2 ?q?");
    size_t total;
    assert_int_equal(vf_size_mul3((size_t)1 << 62, 32, 4, &total, &err), -1);
    assert_int_equal(vf_size_mul3(10015, 768, 4, &total, &err), 0);
    assert_int_equal(total, (size_t)10015 * 768 * 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_errors_name_file_line_and_key),
        cmocka_unit_test(test_typed_values_and_defaults),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_environment_expansion),
        cmocka_unit_test(test_run_config_defaults_are_train_defaults),
        cmocka_unit_test(test_audit_line_cannot_be_forged),
        cmocka_unit_test(test_log_quote_escapes_what_could_end_a_value),
        cmocka_unit_test(test_peer_names_and_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
