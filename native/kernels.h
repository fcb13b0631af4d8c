/* The pixel kernels behind imgopt._native (see module.c). Each has a pure-Python twin in
 * imgopt/pykernels.py that must give the same result; tests/test_native.py holds them to it. */
#ifndef IMGOPT_KERNELS_H
#define IMGOPT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Mean SSIM of two interleaved 8-bit images of `bands` (1..4) bands. *error is set to 1 when
 * memory could not be allocated. */
double imgopt_ssim(const uint8_t *a, const uint8_t *b, int width, int height, int bands, int *error);

/* ThumbHash of a w x h (each 1..100) RGBA image; writes at most IMGOPT_THUMBHASH_MAX bytes
 * to out and returns the length, or -1 when memory could not be allocated. */
#define IMGOPT_THUMBHASH_MAX 32
int imgopt_thumbhash_encode(const uint8_t *rgba, int w, int h, uint8_t *out);

#endif
