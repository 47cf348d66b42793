/* test_safetensors: the safetensors reader's errors on damaged files (each
 * must name the file and the problem, never crash) and the F16/BF16 writer
 * and reader against IEEE bit patterns known independently of this code.
 * Repeated keys (a second "__metadata__" once overflowed the metadata arrays,
 * sized from the second object and filled from the first count on), names
 * cut short by a NUL, fractional offsets, text after the JSON object and
 * non-regular files are refused; run under ASan (make asan) to see the
 * overflow the first of these caught. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "formats/sealed_json.h"

#include <cJSON.h>

static char g_path[256];

static int setup(void **state) {
    snprintf(g_path, sizeof g_path, "/tmp/vf_test_safetensors_%d.safetensors", (int)getpid());
    return 0;
}
static int teardown(void **state) {
    unlink(g_path);
    return 0;
}

/* Writes 8-byte LE header length + header + data. */
static void write_raw(const char *header, uint64_t hlen_field, const void *data, size_t data_len) {
    FILE *f = fopen(g_path, "wb");
    assert_non_null(f);
    unsigned char h[8];
    for (int i = 0; i < 8; i++) h[i] = (unsigned char)(hlen_field >> (8 * i));
    fwrite(h, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
}
static void write_file(const char *header, const void *data, size_t data_len) { write_raw(header, strlen(header), data, data_len); }

/* Opening must fail with a message containing the file name and `what`. */
static void expect_open_error(const char *what) {
    vf_safetensors st;
    vf_error err = {{0}};
    assert_int_equal(vf_st_open(&st, g_path, &err), -1);
    printf("    error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, g_path));
    assert_non_null(strstr(err.msg, what));
}

static const float k_data[4] = {1.0f, 2.0f, 3.0f, 4.0f};

static void test_valid_file_opens(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", k_data, 16);
    vf_safetensors st;
    vf_error err = {{0}};
    assert_int_equal(vf_st_open(&st, g_path, &err), 0);
    float out[4];
    assert_int_equal(vf_st_read_f32(&st, "a", 2, (const int64_t[]){2, 2}, out, &err), 0);
    assert_memory_equal(out, k_data, 16);
    vf_st_close(&st);
}

static void test_truncated_file(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", k_data, 12); /* 4 bytes short */
    expect_open_error("past the end");
}

static void test_too_short_for_header(void **state) {
    FILE *f = fopen(g_path, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    expect_open_error("too short");
}

static void test_header_length_past_end(void **state) {
    write_raw("{}", 1ull << 40, NULL, 0);
    expect_open_error("header length");
}

static void test_malformed_json(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],", k_data, 16);
    expect_open_error("not a valid JSON");
}

static void test_overlapping_offsets(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               k_data, 12);
    expect_open_error("overlaps");
}

static void test_out_of_range_offsets(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", k_data, 8);
    expect_open_error("past the end");
}

static void test_size_mismatch(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", k_data, 16);
    expect_open_error("bytes of data for 3 F32 elements");
}

/* 2^61 F64 elements are 2^64 bytes, which wraps to 0 in 64-bit arithmetic. */
static void test_size_overflow(void **state) {
    write_file("{\"a\":{\"dtype\":\"F64\",\"shape\":[2147483648,1073741824],\"data_offsets\":[0,0]}}", NULL, 0);
    expect_open_error("0 bytes of data for 2305843009213693952 F64 elements");
}

static void test_unknown_dtype(void **state) {
    write_file("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[16],\"data_offsets\":[0,16]}}", k_data, 16);
    expect_open_error("unknown dtype \"F8_E4M3\"");
}

static void test_missing_tensor_and_wrong_shape(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", k_data, 16);
    vf_safetensors st;
    vf_error err = {{0}};
    assert_int_equal(vf_st_open(&st, g_path, &err), 0);
    float out[4];
    assert_int_equal(vf_st_read_f32(&st, "text_projection.weight", 2, (const int64_t[]){2, 2}, out, &err), -1);
    printf("    error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, g_path));
    assert_non_null(strstr(err.msg, "missing tensor text_projection.weight"));
    assert_int_equal(vf_st_read_f32(&st, "a", 2, (const int64_t[]){4, 1}, out, &err), -1);
    printf("    error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, g_path));
    assert_non_null(strstr(err.msg, "tensor a has shape [2, 2], the config needs [4, 1]"));
    vf_st_close(&st);
}

/* A second "__metadata__" with more keys than the first: the old reader
 * re-sized the arrays for the second and went on counting from the first,
 * writing past the end of the heap block (ASan: heap-buffer-overflow). */
static void test_duplicated_metadata(void **state) {
    write_file("{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\"},"
               "\"__metadata__\":{\"c\":\"3\",\"d\":\"4\",\"e\":\"5\",\"f\":\"6\"},"
               "\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
               k_data, 16);
    expect_open_error("key \"__metadata__\" appears twice");
}

static void test_duplicated_tensor_name(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
               k_data, 16);
    expect_open_error("key \"a\" appears twice");
}

/* Inside one tensor entry: which dtype is meant?  cJSON takes the first,
 * Python's json the last; the old reader took F32 and opened the file. */
static void test_duplicated_key_in_entry(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,16]}}", k_data, 16);
    expect_open_error("tensor a: key \"dtype\" appears twice");
}

static void test_duplicated_key_in_metadata(void **state) {
    write_file("{\"__metadata__\":{\"format\":\"pt\",\"format\":\"np\"},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
               k_data, 16);
    expect_open_error("__metadata__: key \"format\" appears twice");
}

/* "a\u0000b" is a different name from "a" to every other reader; cJSON's C
 * string cut it to "a" and the old reader opened the file with tensor "a". */
static void test_nul_in_name(void **state) {
    write_file("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", k_data, 16);
    expect_open_error("\\u0000");
}

/* 0.25 was truncated to 0 and the file opened. */
static void test_fractional_offsets(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0.25,16]}}", k_data, 16);
    expect_open_error("bad data_offsets");
}

/* A second JSON value after the header object was ignored. */
static void test_text_after_header(void **state) {
    write_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}{\"b\":1}", k_data, 16);
    expect_open_error("characters after the header's JSON object");
}

static void test_not_a_regular_file(void **state) {
    char dir[] = "/tmp/vf_test_safetensors_dir_XXXXXX";
    assert_non_null(mkdtemp(dir));
    vf_safetensors st;
    vf_error err = {{0}};
    assert_int_equal(vf_st_open(&st, dir, &err), -1);
    printf("    error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, dir));
    assert_non_null(strstr(err.msg, "not a regular file"));
    rmdir(dir);
}

/* Space padding (what the writer emits) stays valid, and metadata reads back. */
static void test_padding_and_metadata_accepted(void **state) {
    write_file("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}   ",
               k_data, 16);
    vf_safetensors st;
    vf_error err = {{0}};
    assert_int_equal(vf_st_open(&st, g_path, &err), 0);
    assert_string_equal(vf_st_meta(&st, "format"), "pt");
    assert_int_equal(st.n_tensors, 1);
    vf_st_close(&st);
}

/* IEEE-754 binary16 / bfloat16 encodings, from the standard (not this code). */
static const struct { float value; uint16_t f16, bf16; } k_half[] = {
    {1.0f, 0x3C00, 0x3F80},     {-2.0f, 0xC000, 0xC000},          {0.5f, 0x3800, 0x3F00},
    {256.0f, 0x5C00, 0x4380}, {0x1p-24f, 0x0001, 0x3380},       /* smallest f16 subnormal */
    {0.0f, 0x0000, 0x0000},     {-0.15625f, 0xB100, 0xBE20},      {3.140625f, 0x4248, 0x4049},
};
#define N_HALF (sizeof k_half / sizeof *k_half)

static void roundtrip(vf_dtype dt) {
    float src[N_HALF];
    for (size_t i = 0; i < N_HALF; i++) src[i] = k_half[i].value;
    vf_st_writer w;
    vf_st_writer_init(&w);
    vf_error err = {{0}};
    assert_int_equal(vf_st_writer_add_f32(&w, "x", dt, 1, (const int64_t[]){N_HALF}, src, &err), 0);
    assert_int_equal(vf_st_writer_save(&w, g_path, &err), 0);
    vf_st_writer_free(&w);
    vf_safetensors st;
    assert_int_equal(vf_st_open(&st, g_path, &err), 0);
    const vf_st_tensor *t = vf_st_find(&st, "x");
    assert_non_null(t);
    assert_int_equal(t->dtype, dt);
    float back[N_HALF];
    assert_int_equal(vf_st_read_f32(&st, "x", 1, (const int64_t[]){N_HALF}, back, &err), 0);
    for (size_t i = 0; i < N_HALF; i++) {
        uint16_t bits = (uint16_t)(t->data[2 * i] | (t->data[2 * i + 1] << 8)); /* little-endian on disk */
        assert_int_equal(bits, dt == VF_DT_F16 ? k_half[i].f16 : k_half[i].bf16);
        assert_true(back[i] == k_half[i].value);
    }
    vf_st_close(&st);
}
static void test_f16_roundtrip(void **state) { roundtrip(VF_DT_F16); }
static void test_bf16_roundtrip(void **state) { roundtrip(VF_DT_BF16); }

/* Rounding to nearest even on values between representable halves. */
static void test_half_rounding(void **state) {
    assert_int_equal(vf_f32_to_f16(1.0f + 0x1p-11f), 0x3C00);              /* tie -> even (down) */
    assert_int_equal(vf_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3C02);          /* tie -> even (up) */
    assert_int_equal(vf_f32_to_bf16(1.0f + 0x1p-8f), 0x3F80);              /* tie -> even (down) */
    assert_int_equal(vf_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3F82);          /* tie -> even (up) */
    assert_int_equal(vf_f32_to_f16(65504.0f), 0x7BFF);                     /* largest finite f16 */
    assert_int_equal(vf_f32_to_bf16(65504.0f), 0x4780);                    /* not representable: rounds up */
    assert_int_equal(vf_f32_to_f16(1e6f), 0x7C00);                         /* overflow -> inf */
}


/* A state file is sealed: its data section's SHA-256 (as coreutils' sha256sum
 * computes it) is in the metadata, and a flipped byte is refused on open. */
static void test_checksum_seals_the_data(void **state) {
    const float x[5] = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f};
    vf_st_writer w;
    vf_st_writer_init(&w);
    vf_st_writer_checksum(&w);
    vf_error err = {{0}};
    assert_int_equal(vf_st_writer_add_f32(&w, "a", VF_DT_F32, 1, (const int64_t[]){5}, x, &err), 0);
    assert_int_equal(vf_st_writer_add_f32(&w, "b", VF_DT_BF16, 1, (const int64_t[]){5}, x, &err), 0);
    assert_int_equal(vf_st_writer_meta(&w, "step", "7", &err), 0);
    assert_int_equal(vf_st_writer_save(&w, g_path, &err), 0);
    vf_st_writer_free(&w);
    vf_safetensors st;
    assert_int_equal(vf_st_open(&st, g_path, &err), 0);
    char want[65];
    snprintf(want, sizeof want, "%s", vf_st_meta(&st, "vflclip_data_sha256"));
    size_t data_off = st.map_len - (5 * 4 + 5 * 2);
    vf_st_close(&st);
    char cmd[600], got[65] = {0};
    snprintf(cmd, sizeof cmd, "tail -c +%zu %s | sha256sum", data_off + 1, g_path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%64s", got), 1);
    pclose(p);
    printf("    sealed %s, sha256sum %s\n", want, got);
    assert_string_equal(want, got);
    FILE *f = fopen(g_path, "r+b");   /* one bit of the last float flipped */
    fseek(f, -1, SEEK_END);
    int c = fgetc(f);
    fseek(f, -1, SEEK_END);
    fputc(c ^ 1, f);
    fclose(f);
    expect_open_error("does not match the file's checksum");
}

static void test_sealed_json_roundtrip_previous_and_damage(void **state) {
    vf_error err = {{0}};
    cJSON *o = cJSON_Parse("{\"step\": 10, \"loss\": 0.1234567890123, \"name\": \"d\\u00e9j\\u00e0\"}");
    assert_int_equal(vf_sealed_json_write(g_path, o, 1, &err), 0);
    cJSON_ReplaceItemInObject(o, "step", cJSON_CreateNumber(15));
    assert_int_equal(vf_sealed_json_write(g_path, o, 1, &err), 0);
    cJSON_Delete(o);
    cJSON *back = vf_sealed_json_read(g_path, &err);
    assert_non_null(back);
    assert_int_equal(cJSON_GetObjectItem(back, "step")->valueint, 15);
    assert_null(cJSON_GetObjectItem(back, "sha256"));
    assert_true(cJSON_GetObjectItem(back, "loss")->valuedouble == 0.1234567890123);
    cJSON_Delete(back);
    char prev[300];
    snprintf(prev, sizeof prev, "%s.prev", g_path);
    back = vf_sealed_json_read(prev, &err);
    assert_non_null(back);
    assert_int_equal(cJSON_GetObjectItem(back, "step")->valueint, 10);
    cJSON_Delete(back);
    unlink(prev);
    FILE *f = fopen(g_path, "r");   /* 15 -> 16: still JSON, no longer what was sealed */
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *at = strstr(text, "15");
    assert_non_null(at);
    at[1] = '6';
    f = fopen(g_path, "w");
    fputs(text, f);
    fclose(f);
    assert_null(vf_sealed_json_read(g_path, &err));
    printf("    error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "does not match its sha256 checksum"));
    f = fopen(g_path, "w");
    fputs("{\"step\": 16}", f);
    fclose(f);
    assert_null(vf_sealed_json_read(g_path, &err));
    assert_non_null(strstr(err.msg, "has no sha256 checksum"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_file_opens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_short_for_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_length_past_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlapping_offsets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range_offsets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_dtype, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_tensor_and_wrong_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicated_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicated_tensor_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicated_key_in_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicated_key_in_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_in_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fractional_offsets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_after_header, setup, teardown),
        cmocka_unit_test(test_not_a_regular_file),
        cmocka_unit_test_setup_teardown(test_padding_and_metadata_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_f16_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bf16_roundtrip, setup, teardown),
        cmocka_unit_test(test_half_rounding),
        cmocka_unit_test_setup_teardown(test_checksum_seals_the_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sealed_json_roundtrip_previous_and_damage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
