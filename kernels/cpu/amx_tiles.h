/* amx_tiles: what the AMX kernels (attention_amx.c, matmul_amx.c) share: the
 * permission to use the tile state, and the one tile shape they use. */
#ifndef VF_CPU_AMX_TILES_H
#define VF_CPU_AMX_TILES_H

#if defined(__x86_64__) && defined(__GNUC__)
#define VF_AMX_BUILD 1
#define VF_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#endif

/* Asks the kernel for the AMX tile state (Linux arch_prctl); 1 when granted.
 * Only meaningful on a CPU that has AMX-BF16 (cpuid). */
int vf_amx_enable(void);

/* Loads the tile configuration on this thread: palette 1, tiles 0..7 each
 * 16 rows of 64 bytes (a C tile 16 x 16 fp32, an A tile 16 x 32 bf16, a B
 * tile 16 pairs of rows x 16 columns).  Pair it with _tile_release(). */
void vf_amx_configure(void);

#endif
