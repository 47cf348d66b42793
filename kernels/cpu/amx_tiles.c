/* amx_tiles: tile permission and configuration (see amx_tiles.h). */
#include "cpu/amx_tiles.h"

#include <stdint.h>
#ifdef VF_AMX_BUILD
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef ARCH_REQ_XCOMP_PERM
#define ARCH_REQ_XCOMP_PERM 0x1023
#endif
#define XFEATURE_XTILEDATA 18

int vf_amx_enable(void) { return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0; }

typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* A constant, not stores into a local: GCC 12's _tile_loadconfig tells the
 * compiler it reads only 8 bytes, which lets it drop the stores that set up
 * the rest of a local configuration (ldtilecfg then faults). */
static const tile_config g_config __attribute__((aligned(64))) = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

VF_AMX_TARGET void vf_amx_configure(void) { _tile_loadconfig(&g_config); }
#else
int vf_amx_enable(void) { return 0; }
void vf_amx_configure(void) {}
#endif
