/* image_io: decoding PNG (libpng) and JPEG (libjpeg-turbo) into 8-bit RGB,
 * as PIL's Image.open(f).convert("RGB") does:
 *   PNG: 1/2/4/8/16-bit grey, grey+alpha, RGB, RGBA and palette; alpha and
 *        tRNS are dropped (not composited); 16-bit samples keep their high
 *        byte (PIL's "RGB;16B" unpacking); gamma chunks are ignored.
 *   JPEG: YCbCr/RGB, greyscale, CMYK/YCCK (Adobe-inverted, then PIL's
 *        cmyk->rgb formula); islow IDCT with fancy upsampling, EXIF
 *        orientation ignored (neither PIL nor CLIPImageProcessor applies it).
 * The format is detected by magic bytes.  Corrupt or truncated data gives -1
 * with a message naming the file; library errors longjmp back, nothing exits.
 * An image whose header declares more pixels than the limit (below) is refused
 * before its pixels are allocated. */
#ifndef VF_IMAGE_IO_H
#define VF_IMAGE_IO_H

#include <stddef.h>
#include <stdint.h>
#include "util/vf_error.h"

typedef struct vf_image { int w, h; unsigned char *rgb; } vf_image;   /* 8-bit RGB interleaved, (H, W, 3) */

/* Largest accepted width or height; a larger header is treated as hostile. */
#define VF_IMAGE_MAX_SIDE 30000

/* Default limit on width x height, checked from the PNG/JPEG header before
 * anything is allocated or decoded: a 1 MB PNG can declare 20000x20000 and
 * decode to 1.2 GB.  50 megapixels is far above what this project reads
 * (HAM10000/DermaMNIST images are at most 600x450 = 0.27 MP; a full-frame
 * dermatoscope camera photo is ~24 MP) yet caps one decoded image at 150 MB
 * of RGB, times the decoding threads. */
#define VF_IMAGE_DEFAULT_MAX_PIXELS 50000000   /* plain, so the INI schema can stringify it */

/* Sets the limit for every later decode in this process ([data] max_pixels,
 * --max-pixels); 0 restores the default.  Set it at start-up: decoding
 * threads read it without a lock (it is an atomic). */
void vf_image_set_max_pixels(uint64_t max_pixels);
uint64_t vf_image_max_pixels(void);
/* Parses a --max-pixels value (a positive integer); WHAT names it in errors. */
int vf_image_max_pixels_parse(const char *text, const char *what, uint64_t *out, vf_error *err);

int  vf_image_load(const char *path, vf_image *img, vf_error *err);   /* PNG or JPEG; grey/RGBA -> RGB */
/* Decodes an in-memory PNG or JPEG; name is used in error messages. */
int  vf_image_decode(const void *data, size_t len, const char *name, vf_image *img, vf_error *err);
/* Copies a uint8 (H, W, 3) array (e.g. an npz dataset row) into a new image. */
int  vf_image_from_rgb(const unsigned char *rgb, int w, int h, vf_image *img, vf_error *err);
/* A non-owning view of a uint8 (H, W, 3) array: never pass it to vf_image_free. */
static inline vf_image vf_image_wrap(unsigned char *rgb, int w, int h) { vf_image im = {w, h, rgb}; return im; }
/* Frees what vf_image_load/decode/from_rgb allocated; safe on a zeroed image. */
void vf_image_free(vf_image *img);

#endif
