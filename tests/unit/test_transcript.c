/* test_transcript: the transcript reader and writer on hostile and damaged
 * files, at the C level.  Numbers out of range (a seq of 1e30 was converted
 * to uint64_t: undefined behaviour, caught with -fsanitize=float-cast-overflow
 * -fno-sanitize-recover), repeated fields and text after a line's JSON are
 * refused naming file and line; an aggregator continuing a transcript
 * (vf_transcript_open_ex, as after a restart) refuses one that lost its last
 * lines, one that is missing, one that does not start with run_start and
 * one damaged in the middle (the old reader silently cut everything after
 * the damaged line), and with the operator's decision keeps the damaged file
 * as evidence and goes on from its last good line.  Signed transcripts, the
 * run's boundaries and party logs are in tests/python/test_privacy_transcript.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/federation.pb-c.h"
#include "transcript/transcript.h"

static char g_dir[64];

static int setup(void **state) {
    snprintf(g_dir, sizeof g_dir, "/tmp/vf_test_transcript_XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    return 0;
}
static int teardown(void **state) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static const char *path_of(const char *name) {
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, name);
    return p[k];
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

static void expect_verify_fails(const char *path, const char *needle) {
    vf_transcript_report rep;
    vf_error err = {{0}};
    assert_int_equal(vf_transcript_verify(path, "/nonexistent-ca.crt", NULL, NULL, &rep, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
    if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
}

#define HEADER "{\"transcript\":\"vflclip v1\",\"run\":\"r\"}\n"
#define SHA "0000000000000000000000000000000000000000000000000000000000000000"

/* seq 1e30 does not fit uint64_t: converting it was undefined behaviour. */
static void test_huge_numbers_are_refused(void **state) {
    const char *p = path_of("huge.jsonl");
    write_text(p, HEADER "{\"seq\":1e30,\"sender\":\"a\",\"receiver\":\"b\",\"task\":1,\"kind\":\"k\",\"step\":0,\"sha256\":\"" SHA
                         "\",\"loss\":\"-\",\"chain\":\"" SHA "\"}\n");
    expect_verify_fails(p, "line 2: a field is missing or malformed");
    write_text(p, HEADER "{\"seq\":1,\"sender\":\"a\",\"receiver\":\"b\",\"task\":-1e300,\"kind\":\"k\",\"step\":0,\"sha256\":\"" SHA
                         "\",\"loss\":\"-\",\"chain\":\"" SHA "\"}\n");
    expect_verify_fails(p, "line 2: a field is missing or malformed");
    write_text(p, HEADER "{\"seq\":1,\"sender\":\"a\",\"receiver\":\"b\",\"task\":1,\"kind\":\"k\",\"step\":1.5,\"sha256\":\"" SHA
                         "\",\"loss\":\"-\",\"chain\":\"" SHA "\"}\n");
    expect_verify_fails(p, "line 2: a field is missing or malformed");
    /* the end line's entry count, too */
    write_text(p, HEADER "{\"end\":true,\"run\":\"r\",\"entries\":1e300,\"head\":\"x\",\"signature\":\"00\",\"cert\":\"AA==\"}\n");
    expect_verify_fails(p, "line 2: the end line lacks entries");
}

/* {"seq":1,...,"seq":2}: cJSON reads the first, Python's json the last. */
static void test_repeated_fields_and_trailing_text(void **state) {
    const char *p = path_of("dup.jsonl");
    write_text(p, HEADER "{\"seq\":1,\"seq\":2,\"sender\":\"a\",\"receiver\":\"b\",\"task\":1,\"kind\":\"k\",\"step\":0,\"sha256\":\"" SHA
                         "\",\"loss\":\"-\",\"chain\":\"" SHA "\"}\n");
    expect_verify_fails(p, "line 2: a field appears twice");
    write_text(p, "{\"transcript\":\"vflclip v1\",\"run\":\"r\"} {\"run\":\"other\"}\n");
    expect_verify_fails(p, "line 1: text after the JSON object");
}

/* A transcript written through the API: run_start, then n messages. */
static void write_chain(const char *path, int n, int commit_at) {
    vf_transcript t;
    vf_error err;
    assert_int_equal(vf_transcript_open(&t, path, "run-1", &err), 0);
    vf_transcript_entry start = {.sender = "AA", .receiver = "-", .kind = VF_TRANSCRIPT_RUN_START};
    assert_int_equal(vf_transcript_append(&t, &start, &err), 0);
    for (int i = 0; i < n; i++) {
        vf_transcript_entry e = {.sender = "AA", .receiver = "BB", .task = (uint64_t)i + 1, .kind = "text_forward", .step = (uint64_t)i};
        e.sha256[0] = (unsigned char)i;
        assert_int_equal(vf_transcript_append(&t, &e, &err), 0);
        if (i + 1 == commit_at) assert_int_equal(vf_transcript_commit(&t, &err), 0);
    }
    vf_transcript_close(&t);
}

static void expect_resume_fails(const char *path, const char *needle) {
    vf_transcript t;
    vf_error err = {{0}};
    assert_int_equal(vf_transcript_open_ex(&t, path, "run-1", VF_TRANSCRIPT_RESUME, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
    if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
}

static void cut_last_lines(const char *path, int k) {
    char *text = read_text(path);
    for (int i = 0; i < k; i++) {
        char *end = text + strlen(text) - 1;   /* the final '\n' */
        *end = 0;
        *(strrchr(text, '\n') + 1) = 0;
    }
    write_text(path, text);
}

static void test_resume_whole_transcript(void **state) {
    const char *p = path_of("t.jsonl");
    write_chain(p, 5, 5);
    vf_transcript t;
    vf_error err;
    assert_int_equal(vf_transcript_open_ex(&t, p, "run-1", VF_TRANSCRIPT_RESUME, &err), 0);
    assert_int_equal((int)t.entries, 6);
    assert_string_equal(t.first_kind, VF_TRANSCRIPT_RUN_START);
    assert_string_equal(t.damage, "");
    vf_transcript_close(&t);
}

/* The head mark says 6 entries; two lines were lost since. */
static void test_resume_refuses_truncated_end(void **state) {
    const char *p = path_of("t.jsonl");
    write_chain(p, 5, 5);
    cut_last_lines(p, 2);
    char before[1 << 16];
    snprintf(before, sizeof before, "%s", read_text(p));
    expect_resume_fails(p, "has 4 entries but");
    expect_resume_fails(p, "truncated (its last 2 entries are missing)");
    assert_string_equal(read_text(p), before);   /* refused: nothing changed */
}

static void test_resume_refuses_missing_and_headless(void **state) {
    expect_resume_fails(path_of("none.jsonl"), "is missing");
    /* no run_start at seq 1 (a transcript whose beginning was cut and renumbered) */
    const char *p = path_of("t.jsonl");
    vf_transcript t;
    vf_error err;
    assert_int_equal(vf_transcript_open(&t, p, "run-1", &err), 0);
    vf_transcript_entry e = {.sender = "AA", .receiver = "BB", .task = 9, .kind = "text_forward", .step = 9};
    assert_int_equal(vf_transcript_append(&t, &e, &err), 0);
    assert_int_equal(vf_transcript_commit(&t, &err), 0);
    vf_transcript_close(&t);
    expect_resume_fails(p, "does not start with the run's start record (seq 1 is text_forward)");
}

/* A damaged middle line: the old reader stopped there and truncated the
 * file, silently destroying every later line. */
static void test_resume_refuses_damage_in_the_middle(void **state) {
    const char *p = path_of("t.jsonl");
    write_chain(p, 5, 0);
    char *text = read_text(p);
    char *line4 = strstr(text, "\"seq\":3");
    assert_non_null(line4);
    line4[6] = '7';   /* seq 3 -> 7 */
    write_text(p, text);
    size_t len = strlen(read_text(p));
    vf_transcript t;
    vf_error err = {{0}};
    assert_int_equal(vf_transcript_open(&t, p, "run-1", &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "line 4: entry 7 where 3 was due"));
    assert_int_equal(strlen(read_text(p)), len);
}

/* The operator decided to go on: the damaged file is kept, the chain
 * continues from the last good line, damage says what was wrong. */
static void test_operator_decision_keeps_evidence(void **state) {
    const char *p = path_of("t.jsonl");
    write_chain(p, 5, 5);
    cut_last_lines(p, 2);
    vf_transcript t;
    vf_error err;
    assert_int_equal(vf_transcript_open_ex(&t, p, "run-1", VF_TRANSCRIPT_RESUME | VF_TRANSCRIPT_ACCEPT_DAMAGE, &err), 0);
    printf("  damage: %s\n", t.damage);
    assert_non_null(strstr(t.damage, "truncated"));
    assert_int_equal((int)t.entries, 4);
    vf_transcript_entry d = {.sender = "AA", .receiver = "-", .kind = VF_TRANSCRIPT_OPERATOR_DECISION, .step = 4};
    assert_int_equal(vf_transcript_append(&t, &d, &err), 0);
    assert_int_equal(vf_transcript_commit(&t, &err), 0);
    vf_transcript_close(&t);
    char pattern[300];
    snprintf(pattern, sizeof pattern, "%s.damaged-*", p);
    glob_t g;
    assert_int_equal(glob(pattern, 0, NULL, &g), 0);
    assert_int_equal((int)g.gl_pathc, 1);
    globfree(&g);
    /* and the continued transcript now verifies against its new mark */
    assert_int_equal(vf_transcript_open_ex(&t, p, "run-1", VF_TRANSCRIPT_RESUME, &err), 0);
    assert_int_equal((int)t.entries, 5);
    vf_transcript_close(&t);
}

/* A party log names the run of every Welcome / RunSetup it receives, once
 * per change, escaped (the run id comes off the wire). */
static void test_party_log_names_the_run(void **state) {
    const char *p = path_of("party-log.jsonl");
    vf_party_log l;
    vf_error err;
    assert_int_equal(vf_party_log_open(&l, p, "derm", "AB", &err), 0);
    Vflclip__V1__Welcome w = VFLCLIP__V1__WELCOME__INIT;
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME;
    am.welcome = &w;
    w.run_id = "";
    vf_party_log_record(&l, 0, &am.base, NULL, 0);
    w.run_id = "r\"1";
    vf_party_log_record(&l, 0, &am.base, NULL, 0);
    vf_party_log_record(&l, 0, &am.base, NULL, 0);   /* same run: no new line */
    vf_party_log_close(&l);
    char *text = read_text(p);
    printf("%s", text);
    const char *want_run1 = "{\"run\":\"r\\\"1\"}\n";
    assert_non_null(strstr(text, "{\"run\":\"\"}\n"));
    assert_non_null(strstr(text, want_run1));
    assert_null(strstr(strstr(text, want_run1) + 1, "{\"run\""));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_huge_numbers_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repeated_fields_and_trailing_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_whole_transcript, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_refuses_truncated_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_refuses_missing_and_headless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_refuses_damage_in_the_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_operator_decision_keeps_evidence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_party_log_names_the_run, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
