/* ThumbHash encoder (imgopt._native.thumbhash_encode).
 *
 * A line-by-line port of rgbaToThumbHash from the reference implementation by Evan Wallace
 * (https://github.com/evanw/thumbhash, MIT licence). JavaScript's Math.round is floor(x + 0.5)
 * here and in the Python twin (imgopt/pykernels.py); both do the same double operations in
 * the same order, so they give identical bytes. Build with -ffp-contract=off.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static double js_round(double x) { return floor(x + 0.5); }

/* DCT of one channel: the DC term, the AC terms normalised to 0..1, and their scale. */
static int encode_channel(const double *channel, int w, int h, int nx, int ny, double *dc, double *ac,
                          double *scale, double *fx)
{
    int n = 0;
    *dc = 0.0;
    *scale = 0.0;
    for (int cy = 0; cy < ny; cy++) {
        for (int cx = 0; cx * ny < nx * (ny - cy); cx++) {
            double f = 0.0;
            for (int x = 0; x < w; x++)
                fx[x] = cos(M_PI / w * cx * (x + 0.5));
            for (int y = 0; y < h; y++) {
                const double fy = cos(M_PI / h * cy * (y + 0.5));
                for (int x = 0; x < w; x++)
                    f += channel[x + y * w] * fx[x] * fy;
            }
            f /= w * h;
            if (cx || cy) {
                ac[n++] = f;
                if (fabs(f) > *scale)
                    *scale = fabs(f);
            } else {
                *dc = f;
            }
        }
    }
    if (*scale != 0.0)
        for (int i = 0; i < n; i++)
            ac[i] = 0.5 + 0.5 / *scale * ac[i];
    return n;
}

int imgopt_thumbhash_encode(const uint8_t *rgba, int w, int h, uint8_t *out)
{
    const int npix = w * h;
    double avg_r = 0.0, avg_g = 0.0, avg_b = 0.0, avg_a = 0.0;

    for (int i = 0, j = 0; i < npix; i++, j += 4) {
        const double alpha = rgba[j + 3] / 255.0;
        avg_r += alpha / 255.0 * rgba[j];
        avg_g += alpha / 255.0 * rgba[j + 1];
        avg_b += alpha / 255.0 * rgba[j + 2];
        avg_a += alpha;
    }
    if (avg_a != 0.0) {
        avg_r /= avg_a;
        avg_g /= avg_a;
        avg_b /= avg_a;
    }

    const int has_alpha = avg_a < npix;
    const int l_limit = has_alpha ? 5 : 7;
    const int wh_max = w > h ? w : h;
    int lx = (int)js_round((double)(l_limit * w) / wh_max);
    int ly = (int)js_round((double)(l_limit * h) / wh_max);
    if (lx < 1) lx = 1;
    if (ly < 1) ly = 1;

    double *buf = malloc(sizeof(double) * ((size_t)npix * 4 + (size_t)w));
    if (buf == NULL)
        return -1;
    double *l = buf, *p = buf + npix, *q = buf + 2 * npix, *a = buf + 3 * npix, *fx = buf + 4 * npix;

    for (int i = 0, j = 0; i < npix; i++, j += 4) {
        const double alpha = rgba[j + 3] / 255.0;
        const double r = avg_r * (1 - alpha) + alpha / 255.0 * rgba[j];
        const double g = avg_g * (1 - alpha) + alpha / 255.0 * rgba[j + 1];
        const double b = avg_b * (1 - alpha) + alpha / 255.0 * rgba[j + 2];
        l[i] = (r + g + b) / 3;
        p[i] = (r + g) / 2 - b;
        q[i] = r - g;
        a[i] = alpha;
    }

    double l_dc, p_dc, q_dc, a_dc = 0.0, l_scale, p_scale, q_scale, a_scale = 0.0;
    double l_ac[64], p_ac[16], q_ac[16], a_ac[32];
    const int nl = encode_channel(l, w, h, lx > 3 ? lx : 3, ly > 3 ? ly : 3, &l_dc, l_ac, &l_scale, fx);
    const int np = encode_channel(p, w, h, 3, 3, &p_dc, p_ac, &p_scale, fx);
    const int nq = encode_channel(q, w, h, 3, 3, &q_dc, q_ac, &q_scale, fx);
    const int na = has_alpha ? encode_channel(a, w, h, 5, 5, &a_dc, a_ac, &a_scale, fx) : 0;
    free(buf);

    const int is_landscape = w > h;
    const long header24 = (long)js_round(63 * l_dc) | ((long)js_round(31.5 + 31.5 * p_dc) << 6) |
                          ((long)js_round(31.5 + 31.5 * q_dc) << 12) | ((long)js_round(31 * l_scale) << 18) |
                          ((long)has_alpha << 23);
    const long header16 = (is_landscape ? ly : lx) | ((long)js_round(63 * p_scale) << 3) |
                          ((long)js_round(63 * q_scale) << 9) | ((long)is_landscape << 15);
    memset(out, 0, IMGOPT_THUMBHASH_MAX);
    out[0] = header24 & 255;
    out[1] = (header24 >> 8) & 255;
    out[2] = (header24 >> 16) & 255;
    out[3] = header16 & 255;
    out[4] = (header16 >> 8) & 255;
    const int ac_start = has_alpha ? 6 : 5;
    int ac_index = 0;
    if (has_alpha)
        out[5] = (uint8_t)((long)js_round(15 * a_dc) | ((long)js_round(15 * a_scale) << 4));

    const double *acs[4] = {l_ac, p_ac, q_ac, a_ac};
    const int counts[4] = {nl, np, nq, na};
    for (int c = 0; c < (has_alpha ? 4 : 3); c++) {
        for (int i = 0; i < counts[c]; i++, ac_index++)
            out[ac_start + (ac_index >> 1)] |= (uint8_t)((long)js_round(15 * acs[c][i]) << ((ac_index & 1) << 2));
    }
    return ac_start + (ac_index + 1) / 2;
}
