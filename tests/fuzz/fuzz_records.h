/* fuzz_records: the entry points of the record-driven targets (aggregator,
 * admin, knowledge party, image party).  An input is a list of records
 * [op (1 byte), length (2 bytes, big-endian), payload]; each target defines
 * setup (once), begin / apply(op, payload) / end (per input) and
 * write_seeds (its seed corpus, written when VF_FUZZ_WRITE_SEEDS names a
 * directory); this file comes after the target's includes. */
#ifndef VF_FUZZ_RECORDS_H
#define VF_FUZZ_RECORDS_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_buf.h"

static void setup(void);
static void begin(void);
static void apply(int op, const uint8_t *data, size_t n);
static void end(void);
static void write_seeds(const char *dir);

/* Seeds: appends the record [op, m packed] to b and plays it, so a seed
 * drives the target exactly as the fuzzer will. */
static void put_rec_pb(buf *b, int op, const ProtobufCMessage *m) {
    size_t n = m ? protobuf_c_message_get_packed_size(m) : 0;
    uint8_t *p = malloc(n + 1);
    if (!p) abort();
    if (n) protobuf_c_message_pack(m, p);
    uint8_t h[3] = {(uint8_t)op, (uint8_t)(n >> 8), (uint8_t)n};
    put(b, h, 3);
    put(b, p, n);
    apply(op, p, n);
    free(p);
}

/* Seeds: the records so far into dir/name. */
__attribute__((unused)) static void seed_file(const char *dir, const char *name, const buf *b) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->n, f) != b->n || fclose(f)) abort();
}

/* ... and the next seed starts afresh from the target's starting state. */
__attribute__((unused)) static void seed_file_and_restart(const char *dir, const char *name, buf *b) {
    seed_file(dir, name, b);
    end();
    free(b->p);
    *b = (buf){0};
    begin();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    setup();
    const char *seeds = getenv("VF_FUZZ_WRITE_SEEDS");
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    return 0;
}

/* The first record's op byte, for a target whose starting state depends on it. */
static uint8_t records_first_op;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    records_first_op = size ? data[0] : 0;
    begin();
    while (size >= 3) {
        size_t n = (size_t)data[1] << 8 | data[2];
        if (n > size - 3) n = size - 3;
        apply(data[0], data + 3, n);
        data += 3 + n, size -= 3 + n;
    }
    end();
    return 0;
}

#endif
