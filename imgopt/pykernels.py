"""The pure-Python twins of the C kernels in native/ (imgopt._native).

They define the results: the C code is a faster way to compute exactly the same numbers, and
tests/test_native.py checks that it does (bit for bit, on random and real images). They are
also what imgopt runs when the extension could not be built (see imgopt/native.py).

Both are written for plain CPython (no numpy): the SSIM twin leans on ``itertools.accumulate``
and slicing, which keeps it to roughly a second per megapixel.
"""

from __future__ import annotations

import math
from itertools import accumulate

SSIM_C1 = 6.5025  # (0.01 * 255) ** 2
SSIM_C2 = 58.5225  # (0.03 * 255) ** 2


def _luma(data: bytes, bands: int) -> list[int]:
    """Per-pixel luma as in native/ssim.c: BT.601 integers; alpha composites over grey 128."""
    if bands == 1:
        return list(data)
    if bands == 3:
        return [(77 * r + 150 * g + 29 * b + 128) >> 8 for r, g, b in zip(data[0::3], data[1::3], data[2::3])]
    if bands == 2:
        return [(y * a + 128 * (255 - a) + 127) // 255 for y, a in zip(data[0::2], data[1::2])]
    return [
        ((((77 * r + 150 * g + 29 * b + 128) >> 8) * a) + 128 * (255 - a) + 127) // 255
        for r, g, b, a in zip(data[0::4], data[1::4], data[2::4], data[3::4])
    ]


def _axis(size: int) -> tuple[int, int, int]:
    """(block size, number of blocks, blocks per window) along one axis."""
    return (4, size // 4, 2) if size >= 8 else (size, 1, 1)


def _block_rows(values: list[int], width: int, height: int) -> list[list[int]]:
    """Sums of `values` (row-major, width x height) over each block, one list per block row."""
    bw, nbx, _ = _axis(width)
    bh, nby, _ = _axis(height)
    xcover = bw * nbx
    out = []
    for j in range(nby):
        acc = [0] * nbx
        for y in range(j * bh, j * bh + bh):
            prefix = list(accumulate(values[y * width : y * width + xcover], initial=0))
            row = [prefix[i + bw] - prefix[i] for i in range(0, xcover, bw)]
            acc = [s + t for s, t in zip(acc, row)]
        out.append(acc)
    return out


def ssim(a: bytes, b: bytes, width: int, height: int, bands: int) -> float:
    """Mean SSIM of two interleaved 8-bit images (luma, 8x8 windows on a stride of 4)."""
    if width < 1 or height < 1 or not 1 <= bands <= 4:
        raise ValueError("ssim: width and height must be >= 1 and bands 1..4")
    a, b = bytes(a), bytes(b)
    if len(a) != width * height * bands or len(b) != len(a):
        raise ValueError(f"ssim: buffers of {len(a)} and {len(b)} bytes for {width}x{height}x{bands}")
    ya, yb = _luma(a, bands), _luma(b, bands)
    s1 = _block_rows(ya, width, height)
    s2 = _block_rows(yb, width, height)
    ss = _block_rows([x * x + y * y for x, y in zip(ya, yb)], width, height)
    s12 = _block_rows([x * y for x, y in zip(ya, yb)], width, height)
    bw, nbx, kx = _axis(width)
    bh, nby, ky = _axis(height)
    n = bw * kx * bh * ky
    c1n = SSIM_C1 * (n * n)
    c2n = SSIM_C2 * (n * n)
    nwx, nwy = nbx - kx + 1, nby - ky + 1

    def window(rows: list[list[int]], i: int, j: int) -> int:
        return sum(rows[j + dy][i + dx] for dy in range(ky) for dx in range(kx))

    total = 0.0
    for j in range(nwy):
        for i in range(nwx):
            w1, w2 = window(s1, i, j), window(s2, i, j)
            wss, w12 = window(ss, i, j), window(s12, i, j)
            p, q = w1 * w2, w1 * w1 + w2 * w2
            num = (float(2 * p) + c1n) * (float(2 * (n * w12 - p)) + c2n)
            den = (float(q) + c1n) * (float(n * wss - q) + c2n)
            total += num / den
    return total / (float(nwx) * float(nwy))


# -- ThumbHash ---------------------------------------------------------------------------------
# A port of rgbaToThumbHash from the reference implementation by Evan Wallace
# (https://github.com/evanw/thumbhash, MIT licence). Math.round(x) is floor(x + 0.5).


def _js_round(x: float) -> int:
    return math.floor(x + 0.5)


def _encode_channel(channel: list[float], w: int, h: int, nx: int, ny: int) -> tuple[float, list[float], float]:
    dc, ac, scale = 0.0, [], 0.0
    cos, pi = math.cos, math.pi
    for cy in range(ny):
        cx = 0
        while cx * ny < nx * (ny - cy):
            f = 0.0
            fx = [cos(pi / w * cx * (x + 0.5)) for x in range(w)]
            for y in range(h):
                fy = cos(pi / h * cy * (y + 0.5))
                row = channel[y * w : y * w + w]
                for x in range(w):
                    f += row[x] * fx[x] * fy
            f /= w * h
            if cx or cy:
                ac.append(f)
                scale = max(scale, abs(f))
            else:
                dc = f
            cx += 1
    if scale:
        ac = [0.5 + 0.5 / scale * v for v in ac]
    return dc, ac, scale


def thumbhash_encode(rgba: bytes, w: int, h: int) -> bytes:
    """ThumbHash of a w x h RGBA image (each side at most 100 pixels)."""
    if w < 1 or h < 1 or w > 100 or h > 100:
        raise ValueError(f"thumbhash_encode: {w}x{h} does not fit in 100x100")
    rgba = bytes(rgba)
    if len(rgba) != w * h * 4:
        raise ValueError(f"thumbhash_encode: {len(rgba)} bytes for {w}x{h} RGBA")
    npix = w * h
    avg_r = avg_g = avg_b = avg_a = 0.0
    for j in range(0, npix * 4, 4):
        alpha = rgba[j + 3] / 255.0
        avg_r += alpha / 255.0 * rgba[j]
        avg_g += alpha / 255.0 * rgba[j + 1]
        avg_b += alpha / 255.0 * rgba[j + 2]
        avg_a += alpha
    if avg_a:
        avg_r /= avg_a
        avg_g /= avg_a
        avg_b /= avg_a

    has_alpha = avg_a < npix
    l_limit = 5 if has_alpha else 7
    lx = max(1, _js_round(float(l_limit * w) / max(w, h)))
    ly = max(1, _js_round(float(l_limit * h) / max(w, h)))
    lum, p, q, a = [0.0] * npix, [0.0] * npix, [0.0] * npix, [0.0] * npix
    for i in range(npix):
        j = 4 * i
        alpha = rgba[j + 3] / 255.0
        r = avg_r * (1 - alpha) + alpha / 255.0 * rgba[j]
        g = avg_g * (1 - alpha) + alpha / 255.0 * rgba[j + 1]
        b = avg_b * (1 - alpha) + alpha / 255.0 * rgba[j + 2]
        lum[i] = (r + g + b) / 3
        p[i] = (r + g) / 2 - b
        q[i] = r - g
        a[i] = alpha

    l_dc, l_ac, l_scale = _encode_channel(lum, w, h, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _encode_channel(p, w, h, 3, 3)
    q_dc, q_ac, q_scale = _encode_channel(q, w, h, 3, 3)
    a_dc, a_ac, a_scale = _encode_channel(a, w, h, 5, 5) if has_alpha else (0.0, [], 0.0)

    is_landscape = w > h
    header24 = (
        _js_round(63 * l_dc)
        | (_js_round(31.5 + 31.5 * p_dc) << 6)
        | (_js_round(31.5 + 31.5 * q_dc) << 12)
        | (_js_round(31 * l_scale) << 18)
        | (int(has_alpha) << 23)
    )
    header16 = (
        (ly if is_landscape else lx)
        | (_js_round(63 * p_scale) << 3)
        | (_js_round(63 * q_scale) << 9)
        | (int(is_landscape) << 15)
    )
    out = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    ac_start = 6 if has_alpha else 5
    if has_alpha:
        out.append(_js_round(15 * a_dc) | (_js_round(15 * a_scale) << 4))
    acs = [l_ac, p_ac, q_ac, a_ac] if has_alpha else [l_ac, p_ac, q_ac]
    index = 0
    for ac in acs:
        for f in ac:
            pos = ac_start + (index >> 1)
            if pos == len(out):
                out.append(0)
            out[pos] |= _js_round(15 * f) << ((index & 1) << 2)
            index += 1
    return bytes(out)
