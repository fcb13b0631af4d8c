/* SSIM kernel (imgopt._native.ssim).
 *
 * The variant is the one x264 and libaom's tune=ssim statistics use: luma only, uniform
 * 8x8 windows on a stride of 4 (built from sums over 4x4 blocks), the constants of Wang et
 * al. (K1 = 0.01, K2 = 0.03, L = 255), mean over all windows.
 *
 * Luma is BT.601 in integers: Y = (77 R + 150 G + 29 B + 128) >> 8. With an alpha band the
 * luma is composited over mid-grey: Yc = (Y A + 128 (255 - A) + 127) / 255, so a change of
 * alpha shows up as a change of luma. One band is grey, two are grey + alpha.
 *
 * A dimension under 8 pixels is one block of its full size and one window position. Up to
 * 3 trailing rows / columns that do not fill a 4x4 block are not looked at.
 *
 * Every sum is an exact integer; the per-window formula is evaluated in double in a fixed
 * order, and windows are added in row-major order, so imgopt/pykernels.py (the Python twin)
 * gets bit-identical results. Build with -ffp-contract=off so no FMA changes a rounding.
 */
#include <stdint.h>
#include <stdlib.h>

#include "kernels.h"

#define SSIM_C1 6.5025   /* (0.01 * 255)^2 */
#define SSIM_C2 58.5225  /* (0.03 * 255)^2 */

static inline int64_t luma(const uint8_t *p, int bands)
{
    int64_t y, a;
    switch (bands) {
    case 1:
        return p[0];
    case 2:
        y = p[0];
        a = p[1];
        break;
    case 3:
        return (77 * (int64_t)p[0] + 150 * (int64_t)p[1] + 29 * (int64_t)p[2] + 128) >> 8;
    default:
        y = (77 * (int64_t)p[0] + 150 * (int64_t)p[1] + 29 * (int64_t)p[2] + 128) >> 8;
        a = p[3];
        break;
    }
    return (y * a + 128 * (255 - a) + 127) / 255;
}

typedef struct {
    int64_t s1, s2, ss, s12;
} block_t;

/* Sums over the blocks of block row `row` into out[0 .. nbx-1]. */
static void block_row(const uint8_t *a, const uint8_t *b, int width, int bands, int y0, int rows,
                      int nbx, int bw, block_t *out)
{
    const int xcover = nbx * bw;
    const size_t stride = (size_t)width * bands;
    for (int i = 0; i < nbx; i++)
        out[i].s1 = out[i].s2 = out[i].ss = out[i].s12 = 0;
    for (int y = y0; y < y0 + rows; y++) {
        const uint8_t *pa = a + (size_t)y * stride;
        const uint8_t *pb = b + (size_t)y * stride;
        for (int x = 0; x < xcover; x++) {
            const int64_t va = luma(pa + (size_t)x * bands, bands);
            const int64_t vb = luma(pb + (size_t)x * bands, bands);
            block_t *o = &out[x / bw];
            o->s1 += va;
            o->s2 += vb;
            o->ss += va * va + vb * vb;
            o->s12 += va * vb;
        }
    }
}

double imgopt_ssim(const uint8_t *a, const uint8_t *b, int width, int height, int bands, int *error)
{
    /* Blocks and windows along each axis. */
    const int bw = width >= 8 ? 4 : width, nbx = width >= 8 ? width / 4 : 1, kx = width >= 8 ? 2 : 1;
    const int bh = height >= 8 ? 4 : height, nby = height >= 8 ? height / 4 : 1, ky = height >= 8 ? 2 : 1;
    const int nwx = nbx - kx + 1, nwy = nby - ky + 1;
    const int64_t n = (int64_t)bw * kx * bh * ky; /* pixels in a window, at most 64 */
    const double c1n = SSIM_C1 * (double)(n * n);
    const double c2n = SSIM_C2 * (double)(n * n);
    block_t *rows = malloc(sizeof(block_t) * (size_t)nbx * 2);
    double total = 0.0;

    *error = 0;
    if (rows == NULL) {
        *error = 1;
        return 0.0;
    }
    block_t *prev = rows, *cur = rows + nbx;
    block_row(a, b, width, bands, 0, bh, nbx, bw, prev);
    for (int j = 0; j < nwy; j++) {
        block_t *top = prev, *bottom = prev;
        if (ky == 2) {
            block_row(a, b, width, bands, (j + 1) * bh, bh, nbx, bw, cur);
            bottom = cur;
        }
        for (int i = 0; i < nwx; i++) {
            int64_t s1 = top[i].s1, s2 = top[i].s2, ss = top[i].ss, s12 = top[i].s12;
            if (kx == 2) {
                s1 += top[i + 1].s1; s2 += top[i + 1].s2; ss += top[i + 1].ss; s12 += top[i + 1].s12;
            }
            if (ky == 2) {
                s1 += bottom[i].s1; s2 += bottom[i].s2; ss += bottom[i].ss; s12 += bottom[i].s12;
                if (kx == 2) {
                    s1 += bottom[i + 1].s1; s2 += bottom[i + 1].s2; ss += bottom[i + 1].ss; s12 += bottom[i + 1].s12;
                }
            }
            const int64_t p = s1 * s2, q = s1 * s1 + s2 * s2;
            const double num = ((double)(2 * p) + c1n) * ((double)(2 * (n * s12 - p)) + c2n);
            const double den = ((double)q + c1n) * ((double)(n * ss - q) + c2n);
            total += num / den;
        }
        if (ky == 2) { /* the bottom row of blocks is the next window row's top */
            block_t *t = prev;
            prev = cur;
            cur = t;
        }
    }
    free(rows);
    return total / ((double)nwx * (double)nwy);
}
