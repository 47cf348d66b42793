/* open_clip_resnet: loads the ModifiedResNet image tower of an OpenCLIP
 * checkpoint (open_clip_model.safetensors, tensors under "visual.") into the
 * CPU kernel's vf_resnet, folding each eval-mode BatchNorm (weight, bias,
 * running_mean, running_var; eps 1e-5) into the convolution before it. */
#ifndef VF_OPEN_CLIP_RESNET_H
#define VF_OPEN_CLIP_RESNET_H

#include "clip/open_clip_config.h"
#include "cpu/resnet.h"
#include "formats/safetensors.h"
#include "util/vf_error.h"

/* The kernel config of an OpenCLIP ResNet: heads = width*32 / head_width. */
vf_resnet_config vf_open_clip_resnet_config(const vf_open_clip_config *oc);

/* Initialises r and fills every weight from st.  A missing tensor or a shape
 * the config does not expect fails with the file and the tensor name. */
int vf_open_clip_resnet_load(vf_resnet *r, const vf_open_clip_config *oc, const vf_safetensors *st, vf_error *err);

#endif
