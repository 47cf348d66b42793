/* attention_amx: the two products of one attention head (head size 64) in
 * bf16 on AMX tiles, for the bf16 attention of cpu/attention.h on CPUs with
 * AMX-BF16.  oneDNN's matmul pays a call and a repack of k or v for each
 * such small product (197 x 64 x 197 for ViT-B/16), which made these
 * products as slow as the layer's big ones; here a head's repacking is a
 * copy of 25 kB and each product a few hundred tile instructions.
 *
 * Shapes: q, k, v rows `ld` elements apart, T rows each (the head's columns
 * of the stacked (T, 3C) projection).  The scores S (Tr, Tr) fp32 and the
 * probabilities P (Tr, Tc) bf16 are padded with zeros to whole tiles,
 * Tr = T rounded up to 16, Tc to 32.  Only where vf_amx_enable
 * (amx_tiles.h) said yes. */
#ifndef VF_CPU_ATTENTION_AMX_H
#define VF_CPU_ATTENTION_AMX_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of the per-thread scratch of vf_amx_attend_head. */
size_t vf_amx_scratch_bytes(int T);

/* out (T, 64) bf16, rows ldo apart = softmax(scale q k^T) v for one head
 * (causal: s <= t): q k^T and P v on tiles, the softmax in AVX-512 (P
 * rounded to bf16 unnormalised, the 1 / sum applied to P v's rows).
 * scratch: vf_amx_scratch_bytes(T), any alignment. */
void vf_amx_attend_head(uint16_t *out, long ldo, const uint16_t *q, const uint16_t *k, const uint16_t *v, long ld, int T,
                        float scale, int causal, void *scratch);

#endif
