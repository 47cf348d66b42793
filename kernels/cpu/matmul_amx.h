/* matmul_amx: the image towers' Linear layers in bf16 on AMX tiles, with
 * bias, GELU, residual and the output conversion applied to each 32 x 32
 * block of sums while it is still in L1 (issue 18).  On AMX machines it
 * replaces oneDNN 2.6's matmul for the shapes it takes (both sides multiples
 * of 32): with its GELU post-op oneDNN's fc1 took 1.4x-1.6x its bare product, and
 * its fc2 (K = 4C) 8.2 ms where this loop takes 6.0 (docs/BENCHMARKS.md).
 * cpu/matmul_bf16.h chooses between the two; this file knows only tiles.
 *
 * The weight (OC, IC) is packed as OC/16 column blocks of IC/32 tiles, each
 * tile 16 rows of 64 bytes: row i holds, for the block's 16 output columns,
 * the pair of weights at inputs 2i and 2i + 1 (the layout TDPBF16PS reads). */
#ifndef VF_CPU_MATMUL_AMX_H
#define VF_CPU_MATMUL_AMX_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/clip_shapes.h"

/* 1 when an (OC, IC) Linear layer can run here (IC and OC multiples of 32). */
int vf_amx_linear_fits(int IC, int OC);

/* dst (IC * OC bf16) = w (OC, IC) bf16 in the tile layout above. */
void vf_amx_linear_pack(uint16_t *dst, const uint16_t *w, int IC, int OC);

/* out (N, OC) = act(inp (N, IC) @ w^T + bias) [+ resid (N, OC)]: as
 * vf_bf16_linear_forward (cpu/matmul_bf16.h).  Threads over row blocks;
 * call it from outside parallel regions, on a CPU where vf_amx_enable
 * (amx_tiles.h) said yes.  Rows past the last whole block of 32 go through
 * a zero-padded per-thread copy, allocated on the first call that needs it. */
void vf_amx_linear_forward(const uint16_t *packed, int IC, int OC, void *out, int out_bf16, const float *resid,
                           const uint16_t *inp, const float *bias, int N, const vf_activation *act);

#endif
