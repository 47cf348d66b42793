/* conv: the convolutional building blocks of CLIP's ModifiedResNet on the CPU:
 * 2-D convolution (im2col + OpenBLAS sgemm) with a fused bias / residual /
 * ReLU epilogue, eval-mode BatchNorm folded into the convolution at load time,
 * and average pooling.
 *
 * Activations are channel-major across the batch, "CNHW": x[c][b][h][w].
 * A convolution is then one matrix product for the whole batch,
 *   out (Cout, B*Ho*Wo) = W (Cout, Cin*kh*kw) @ col (Cin*kh*kw, B*Ho*Wo),
 * and a 1x1 stride-1 convolution needs no im2col at all (col is x itself). */
#ifndef VF_CPU_CONV_H
#define VF_CPU_CONV_H

#include <stddef.h>
#include <stdint.h>

typedef struct vf_conv2d {
    int cin, cout, kh, kw, stride, pad;
    float *weight;  // (cout, cin*kh*kw), BatchNorm already folded in
    float *bias;    // (cout)
    const uint16_t *weight_bf16; // the weight in bf16 (cpu/matmul_bf16.h) for inference, or NULL: fp32
} vf_conv2d;

static inline int vf_conv_out_size(int in, int k, int stride, int pad) {
    return (in + 2 * pad - k) / stride + 1;
}

/* Floats of im2col scratch vf_conv2d_forward wants for B images of HxW
 * (0 for a 1x1 stride-1 convolution): a few MB per OpenMP thread. */
size_t vf_conv2d_col_floats(const vf_conv2d *c, int B, int H, int W);

/* out = relu?(conv(x) + bias [+ residual])
 *   x        (cin,  B, H,  W)
 *   residual (cout, B, Ho, Wo) or NULL; may not alias out
 *   out      (cout, B, Ho, Wo); may not alias x
 *   col      scratch of col_floats floats (vf_conv2d_col_floats)
 * The B*Ho*Wo output columns are cut into tiles; each OpenMP thread builds
 * its tile's im2col columns, multiplies them by single-threaded sgemm and
 * applies the epilogue while they are in cache.  Too few columns for that:
 * one tile, with OpenBLAS threading the product. */
void vf_conv2d_forward(const vf_conv2d *c, const float *x, int B, int H, int W,
                       const float *residual, int relu, float *out, float *col, size_t col_floats);

/* The same with an explicit tile width (columns; <= 0: one tile with
 * OpenBLAS threads); col needs cin*kh*kw*tile floats per OpenMP thread, or
 * cin*kh*kw*B*Ho*Wo for one tile.  For tests of the tiling. */
void vf_conv2d_forward_tiled(const vf_conv2d *c, const float *x, int B, int H, int W, const float *residual, int relu,
                             float *out, float *col, size_t col_floats, int tile);

/* Folds eval-mode BatchNorm, y = (conv(x) - mean) / sqrt(var + eps) * gamma + beta,
 * into the convolution: weight (cout, k) and bias (cout) are rewritten in place
 * (bias is the convolution's own bias, 0 when it has none). */
void vf_conv2d_fold_bn(float *weight, float *bias, int cout, int k, const float *gamma,
                       const float *beta, const float *mean, const float *var, float eps);

/* Average pooling with kernel = stride = k, no padding, floor on odd sizes
 * (torch.nn.AvgPool2d(k)).  x (planes, H, W) -> out (planes, H/k, W/k). */
void vf_avgpool2d_forward(const float *x, int planes, int H, int W, int k, float *out);

/* (B, C, HW) -> (C, B, HW) */
void vf_nchw_to_cnhw(const float *x, int B, int C, int HW, float *out);

#endif
