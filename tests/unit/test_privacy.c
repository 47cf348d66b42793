/* test_privacy: C-level behaviour of common/privacy and common/transcript on
 * bad and edge inputs.  Configuration mistakes come back as one line naming
 * the option; the seeded noise is reproducible and independent per stream;
 * the accountant behaves as epsilon must (more steps or a higher sampling
 * rate never cost less, more noise never costs more, no noise is infinite);
 * a transcript that is empty, not JSON, missing fields, cut before its
 * signed end, or changed in one character is refused with the file and line,
 * never a crash.  (Numerical agreement with dp-accounting, autograd and
 * `cryptography` is in tests/python/test_privacy*.py.) */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "privacy/embed_dp.h"
#include "privacy/gauss.h"
#include "privacy/rdp.h"
#include "privacy/text_grad_guard.h"
#include "proto/federation.pb-c.h"
#include "transcript/transcript.h"

static void expect_bad(vf_text_grad_privacy p, const char *needle) {
    vf_error err = {{0}};
    assert_int_equal(vf_text_grad_privacy_check(&p, "run.ini", &err), -1);
    if (!strstr(err.msg, needle) || !strstr(err.msg, "run.ini")) fail_msg("'%s' lacks '%s'", err.msg, needle);
}

static void test_config_mistakes_are_named(void **state) {
    vf_text_grad_privacy d = vf_text_grad_privacy_default();
    vf_error err;
    assert_int_equal(vf_text_grad_privacy_check(&d, "x", &err), 0);
    assert_int_equal(vf_text_grad_privacy_active(&d), 0);
    vf_text_grad_privacy p = d;
    p.noise_multiplier = 1;
    expect_bad(p, "text_grad_noise 1 needs text_grad_clip > 0");
    p = d;
    p.epsilon_budget = 3;
    expect_bad(p, "epsilon_budget 3 needs text_grad_noise > 0");
    p = d;
    p.delta = 1.5;
    expect_bad(p, "dp_delta");
    p = d;
    p.accumulate = 0;
    expect_bad(p, "text_grad_accumulate 0");
    p = d;
    p.clip = NAN;
    expect_bad(p, "text_grad_clip");
    vf_embed_privacy e = {0, 0.5f, 1, 1e-5};
    assert_int_equal(vf_embed_privacy_check(&e, "image-party.ini", &err), -1);
    assert_non_null(strstr(err.msg, "embed_noise 0.5 needs embed_clip > 0"));
}

static void test_noise_is_seeded_and_streams_are_independent(void **state) {
    enum { N = 20001 };
    float *a = calloc(N, sizeof *a), *b = calloc(N, sizeof *b), *c = calloc(N, sizeof *c);
    vf_gauss_add(42, VF_NOISE_TEXT_GRAD, 7, 2.0f, a, N);
    vf_gauss_add(42, VF_NOISE_TEXT_GRAD, 7, 2.0f, b, N);
    assert_memory_equal(a, b, N * sizeof *a);
    vf_gauss_add(42, VF_NOISE_TEXT_GRAD, 8, 2.0f, c, N);   /* next step: other noise */
    double sa = 0, saa = 0, sac = 0;
    for (int i = 0; i < N; i++) {
        assert_true(isfinite(a[i]));
        sa += a[i];
        saa += (double)a[i] * a[i];
        sac += (double)a[i] * c[i];
    }
    double mean = sa / N, sd = sqrt(saa / N - mean * mean), corr = sac / N / (sd * sd);
    printf("  noise: mean %.4f, std %.4f (asked 2), correlation between steps %.4f\n", mean, sd, corr);
    assert_true(fabs(mean) < 0.05 && fabs(sd - 2) < 0.05 && fabs(corr) < 0.03);
    free(a); free(b); free(c);
}

static void test_epsilon_moves_the_right_way(void **state) {
    double base = vf_rdp_epsilon(0.01, 1.1, 1000, 1e-5);
    assert_true(isfinite(base) && base > 0);
    assert_true(vf_rdp_epsilon(0.01, 1.1, 2000, 1e-5) > base);
    assert_true(vf_rdp_epsilon(0.02, 1.1, 1000, 1e-5) > base);
    assert_true(vf_rdp_epsilon(0.01, 2.2, 1000, 1e-5) < base);
    assert_true(vf_rdp_epsilon(0.01, 1.1, 1000, 1e-3) < base);
    assert_true(isinf(vf_rdp_epsilon(0.01, 0, 1000, 1e-5)));
    assert_true(vf_rdp_epsilon(0, 1.1, 1000, 1e-5) == 0);
    vf_text_grad_privacy p = vf_text_grad_privacy_default();
    assert_true(isinf(vf_text_grad_epsilon(&p, 32, 640, 10)));   /* no noise, no guarantee */
    p.clip = 1;
    p.noise_multiplier = 1.1f;
    assert_true(vf_text_grad_epsilon(&p, 32, 640, 0) == 0);
    assert_true(fabs(vf_text_grad_epsilon(&p, 32, 640, 10) - vf_rdp_epsilon(0.05, 1.1f, 10, 1e-5)) < 1e-12);
}

static char dir[] = "/tmp/vf_test_privacy_XXXXXX";

static const char *write_file(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void expect_verify_fails(const char *path, const char *needle) {
    vf_transcript_report rep;
    vf_error err = {{0}};
    assert_int_equal(vf_transcript_verify(path, "/nonexistent-ca.crt", NULL, NULL, &rep, &err), -1);
    printf("  %s\n", err.msg);
    if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
}

static void test_bad_transcripts_are_refused_with_file_and_line(void **state) {
    assert_non_null(mkdtemp(dir));
    expect_verify_fails(write_file("empty.jsonl", ""), "empty");
    expect_verify_fails(write_file("garbage.jsonl", "\x01\x02 not json\n"), "line 1: not JSON");
    expect_verify_fails(write_file("header.jsonl", "{\"x\":1}\n"), "line 1: not a vflclip transcript header");
    expect_verify_fails(write_file("fields.jsonl", "{\"transcript\":\"vflclip v1\",\"run\":\"r\"}\n{\"seq\":1}\n"),
                        "line 2: a field is missing or malformed");
    /* a real chain written by the writer, never signed: the end is missing */
    char path[256];
    snprintf(path, sizeof path, "%s/real.jsonl", dir);
    vf_transcript t;
    vf_error err;
    assert_int_equal(vf_transcript_open(&t, path, "run-1", &err), 0);
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    Vflclip__V1__TextBackward tf = VFLCLIP__V1__TEXT_BACKWARD__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_TEXT_BACKWARD;
    am.text_backward = &tf;
    for (int i = 0; i < 3; i++) {
        tf.step = (uint64_t)i;
        am.task_id = (uint64_t)i + 1;
        vf_transcript_entry e = {.sender = "AA", .receiver = "BB", .task = am.task_id};
        e.kind = vf_transcript_kind(&am.base, &e.step);
        assert_string_equal(e.kind, "text_backward");
        assert_int_equal(e.step, i);
        vf_pb_sha256(&am.base, e.sha256);
        assert_int_equal(vf_transcript_append(&t, &e, &err), 0);
    }
    vf_transcript_close(&t);
    expect_verify_fails(path, "no signed end line");
    /* reopening continues the chain (as after an aggregator restart) */
    assert_int_equal(vf_transcript_open(&t, path, "run-1", &err), 0);
    assert_int_equal((int)t.entries, 3);
    vf_transcript_close(&t);
    assert_int_equal(vf_transcript_open(&t, path, "run-2", &err), -1);
    assert_non_null(strstr(err.msg, "not the transcript of run run-2"));
    /* one character changed in an entry breaks the chain at that line */
    FILE *f = fopen(path, "r");
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *second = strstr(strchr(buf, '\n') + 1, "\n") + 1;   /* line 3 */
    char *digit = strstr(second, "\"task\":2") + 7;
    *digit = '5';
    expect_verify_fails(write_file("tampered.jsonl", buf), "line 3: the hash chain breaks");
    vf_transcript_report rep;
    assert_int_equal(vf_transcript_verify(path, NULL, NULL, NULL, &rep, &err), -1);
    assert_non_null(strstr(err.msg, "--ca"));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_mistakes_are_named),
        cmocka_unit_test(test_noise_is_seeded_and_streams_are_independent),
        cmocka_unit_test(test_epsilon_moves_the_right_way),
        cmocka_unit_test(test_bad_transcripts_are_refused_with_file_and_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
