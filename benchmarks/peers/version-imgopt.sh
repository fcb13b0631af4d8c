#!/usr/bin/env bash
# prints the imgopt peer's version line
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain -- imgopt 2>/dev/null | head -c1)
cd "$ROOT" && REV="$rev${dirty:++dirty}" "${IMGOPT_PYTHON:-$ROOT/.venv/bin/python}" -c '
import os, platform, pyvips, uvicorn
v = ".".join(str(pyvips.version(i)) for i in range(3))
rev = os.environ["REV"]
print(f"imgopt {rev}, pyvips {pyvips.__version__}, libvips {v}, uvicorn {uvicorn.__version__}, python {platform.python_version()}")'
