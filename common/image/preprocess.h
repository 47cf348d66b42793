/* preprocess: transformers' CLIPImageProcessor on 8-bit RGB input, exactly:
 *   resize so the shortest edge = shortest_edge (long edge = int(S * long /
 *   short), as get_resize_output_image_size), with PIL's BICUBIC (separable,
 *   antialiased support scaled by the downscale factor, a = -0.5, horizontal
 *   pass then vertical, 22-bit fixed point with 8-bit rounding/clipping after
 *   each pass, as Pillow's Resample.c does for uint8 images);
 *   center crop (top = (h - crop_h) // 2, zero padding where the image is
 *   smaller, as image_transforms.center_crop);
 *   x * rescale in double rounded to float32, then (x - mean) / std in float32.
 * An image whose shortest edge already equals shortest_edge is not resampled.
 * Output is float (3, crop_h, crop_w), CHW. */
#ifndef VF_PREPROCESS_H
#define VF_PREPROCESS_H

#include "image/image_io.h"
#include "util/vf_error.h"

typedef struct vf_preprocess_cfg { int shortest_edge, crop_h, crop_w, do_resize, do_center_crop, do_normalize;
                                   float rescale, mean[3], std[3];
                                   /* issue 5: OpenCLIP checkpoints crop as torchvision's CenterCrop,
                                    * top = int(round((h - crop_h) / 2)), not (h - crop_h) // 2 */
                                   int torchvision_crop; } vf_preprocess_cfg;

/* Parses one transformers preprocessor/processor JSON text (4.x: "size": 224
 * or {"shortest_edge": 224}, "crop_size": 224 or {"height","width"}; 5.x: the
 * "image_processor" object); name is used in errors.  Missing keys take
 * CLIPImageProcessor's defaults; a resample other than BICUBIC (3) is
 * refused.  Which file a checkpoint uses is the clip layer's business
 * (clip/model_preprocess.h). */
int  vf_preprocess_config_parse(const char *json, const char *name, vf_preprocess_cfg *cfg, vf_error *err);
void vf_preprocess_defaults(vf_preprocess_cfg *cfg, int image_size);  /* CLIP mean/std, bicubic */
/* The one fingerprint of a preprocessing: SHA-256 (64 hex digits) of every
 * field, floats written exactly (%a).  Image parties that disagree on it are
 * refused at Hello, and it is part of the embedding-cache key. */
void vf_preprocess_fingerprint(const vf_preprocess_cfg *cfg, char hex[65]);
int  vf_preprocess(const vf_preprocess_cfg *cfg, const vf_image *img, float *out /*(3,crop_h,crop_w)*/, vf_error *err);

#endif
