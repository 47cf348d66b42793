/* fuzz_records: the entry points of the record-driven targets (aggregator,
 * admin, knowledge party, image party).  An input is a list of records
 * [op (1 byte), length (2 bytes, big-endian), payload]; each target defines
 * setup (once), begin / apply(op, payload) / end (per input) and
 * write_seeds (its seed corpus, written when VF_FUZZ_WRITE_SEEDS names a
 * directory), then includes this file. */
#ifndef VF_FUZZ_RECORDS_H
#define VF_FUZZ_RECORDS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static void setup(void);
static void begin(void);
static void apply(int op, const uint8_t *data, size_t n);
static void end(void);
static void write_seeds(const char *dir);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    setup();
    const char *seeds = getenv("VF_FUZZ_WRITE_SEEDS");
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
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
