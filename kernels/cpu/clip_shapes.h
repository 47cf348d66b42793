/* clip_shapes: the shapes the CLIP kernels compute with — one transformer
 * stack (width, MLP width, layers, heads, activation, layer-norm epsilon),
 * the vision and the text tower.  Kernels know shapes, not checkpoints:
 * reading them from config.json or open_clip_config.json is common/clip's. */
#ifndef VF_CPU_CLIP_SHAPES_H
#define VF_CPU_CLIP_SHAPES_H

typedef enum vf_activation {
    VF_ACT_QUICK_GELU = 0, /* x * sigmoid(1.702 x), OpenAI CLIP */
    VF_ACT_GELU,           /* exact erf GELU */
    VF_ACT_GELU_TANH,      /* tanh approximation ("gelu_new", "gelu_pytorch_tanh") */
} vf_activation;

/* One transformer stack (vision or text). */
typedef struct vf_clip_encoder_config {
    int hidden_size;       /* C */
    int intermediate_size; /* F, MLP width */
    int num_layers;        /* L */
    int num_heads;         /* NH; head size C / NH */
    vf_activation act;
    float layer_norm_eps;
} vf_clip_encoder_config;

typedef struct vf_clip_vision_config {
    vf_clip_encoder_config enc;
    int image_size;   /* H = W */
    int patch_size;   /* P; (H/P)^2 patches + 1 class token */
    int num_channels; /* 3 */
} vf_clip_vision_config;

typedef struct vf_clip_text_config {
    vf_clip_encoder_config enc;
    int vocab_size;
    int max_positions; /* 77 */
    int bos_token_id, eos_token_id, pad_token_id;
} vf_clip_text_config;

/* "quick_gelu", "gelu", "gelu_pytorch_tanh" (transformers' hidden_act names). */
const char *vf_activation_name(vf_activation act);

#endif
