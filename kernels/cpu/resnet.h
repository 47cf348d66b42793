/* resnet: CLIP's ModifiedResNet image tower on the CPU (fp32, batched).
 *
 *   stem:  3x3/2 conv -> BN -> ReLU -> 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN -> ReLU -> avgpool 2
 *   layer1..4: Bottleneck blocks (1x1, 3x3, [avgpool s], 1x1 x4 channels); the first
 *          block of a stage downsamples its shortcut by avgpool s -> 1x1 conv -> BN
 *          ("anti-aliased": every convolution has stride 1, pooling does the striding)
 *   attnpool: tokens = [mean of the grid, grid] + positional embedding; one query
 *          (the mean token) attends over all tokens with q/k/v projections, then c_proj.
 *
 * BatchNorm (eval mode) is folded into each convolution's weight and bias when the
 * weights are loaded, so the forward is convolutions, pools and attention only.
 * Parameters live in one arena per tower, activations in one arena sized for a
 * maximum batch; a forward never allocates. */
#ifndef VF_CPU_RESNET_H
#define VF_CPU_RESNET_H

#include <stddef.h>
#include "cpu/conv.h"
#include "util/arena.h"
#include "util/vf_error.h"

typedef struct vf_resnet_config {
    int layers[4];    // Bottleneck blocks per stage
    int width;        // stem width; stage i has width<<i planes, x4 channels out
    int image_size;   // square input
    int heads;        // attention-pool heads (open_clip: width*32/64)
    int output_dim;   // embedding dimension after c_proj
} vf_resnet_config;

typedef struct vf_bottleneck {
    int inplanes, planes, stride;  // channels in, bottleneck planes (out = 4*planes), pool stride
    vf_conv2d conv1, conv2, conv3; // 1x1, 3x3 pad 1, 1x1
    int has_downsample;
    vf_conv2d downsample;          // 1x1 applied after avgpool(stride)
} vf_bottleneck;

typedef struct vf_attnpool {
    int grid, embed_dim, heads, output_dim;
    float *pos;            // (grid*grid+1, embed_dim)
    float *q_w, *k_w, *v_w; // (embed_dim, embed_dim), nn.Linear layout (out, in)
    float *q_b, *k_b, *v_b; // (embed_dim)
    float *c_w;            // (output_dim, embed_dim)
    float *c_b;            // (output_dim)
} vf_attnpool;

typedef struct vf_resnet {
    vf_resnet_config cfg;
    vf_conv2d stem[3];
    int n_blocks;
    vf_bottleneck *blocks; // layer1 blocks, then layer2, ... (in params)
    vf_attnpool attnpool;
    vf_arena params;       // the block descriptors and every weight and bias above
} vf_resnet;

/* Checks the config (image size a multiple of 32, heads dividing width*32, ...),
 * reserves the parameter arena and points every weight into it (zeroed; the
 * loader fills them). */
int vf_resnet_init(vf_resnet *r, const vf_resnet_config *cfg, vf_error *err);
void vf_resnet_free(vf_resnet *r);

typedef struct vf_resnet_acts {
    int max_batch;
    float *input;              // (3, B, S, S)
    float *x, *y, *t1, *t2, *pooled, *shortcut, *col;
    size_t col_floats;
    float *tokens, *q, *k, *v, *scores, *attended;  // attention pool
    vf_arena arena;
} vf_resnet_acts;

/* Sizes one activation arena for up to max_batch images. */
int vf_resnet_acts_init(vf_resnet_acts *a, const vf_resnet *r, int max_batch, vf_error *err);
void vf_resnet_acts_free(vf_resnet_acts *a);

/* pixels (B, 3, S, S) normalized -> out (B, output_dim).  B may exceed
 * max_batch: the batch is processed in slices of max_batch. */
void vf_resnet_forward(const vf_resnet *r, vf_resnet_acts *a, const float *pixels, int B, float *out);

#endif
