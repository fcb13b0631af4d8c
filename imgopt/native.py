"""Picks the implementation of the pixel kernels: C (imgopt._native) or the Python twins.

``ssim(a, b, width, height, bands)`` and ``thumbhash_encode(rgba, w, h)`` are the C kernels
from native/ when the package was built with a compiler, else the pure-Python twins from
:mod:`imgopt.pykernels` (same results, much slower) and a warning says so. Setting
``IMGOPT_NATIVE=0`` forces the twins (for tests and comparisons).

Pixels reach the C code without a copy: the kernels take any buffer-protocol object, and
pyvips' ``Image.write_to_memory()`` returns a cffi buffer over the memory libvips rendered
into, so the bytes libvips wrote are the bytes C reads.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable

from . import pykernels

log = logging.getLogger("imgopt")

py_ssim = pykernels.ssim
py_thumbhash_encode = pykernels.thumbhash_encode

_native = None
_reason = ""
if os.environ.get("IMGOPT_NATIVE", "").strip().lower() in ("0", "false", "no", "off", "python"):
    _reason = "IMGOPT_NATIVE=0"
else:
    try:
        from . import _native  # type: ignore[attr-defined, no-redef]
    except ImportError as e:
        _reason = f"imgopt._native is not built ({e})"

c_ssim: Callable[[bytes, bytes, int, int, int], float] | None = _native.ssim if _native else None
c_thumbhash_encode: Callable[[bytes, int, int], bytes] | None = _native.thumbhash_encode if _native else None
buffer_address: Callable[[object], int] | None = _native.buffer_address if _native else None

#: 'c' or 'python': which implementation ssim() and thumbhash_encode() are.
IMPLEMENTATION = "c" if _native else "python"

ssim: Callable[[bytes, bytes, int, int, int], float] = c_ssim or py_ssim
thumbhash_encode: Callable[[bytes, int, int], bytes] = c_thumbhash_encode or py_thumbhash_encode

if _native is None:
    _message = (
        f"imgopt: using the pure-Python pixel kernels ({_reason}); auto quality and placeholders "
        "work but are much slower. Install a C compiler and Python headers, then reinstall imgopt."
    )
    log.warning(_message)
    warnings.warn(_message, RuntimeWarning, stacklevel=2)
