"""Read the ``images`` section of a site's next.config.(js|mjs|ts) by asking Node.js to load it,
or of its build.

The site and the service then share one source of truth: ``imgopt serve --next-config
./next.config.js`` gets exactly the ``images`` object that ``next build`` saw, including values
computed from environment variables, function-form configs and async configs.

How the config is evaluated (the same way ``next start`` does it, as far as ``images`` goes):

* ``NODE_ENV`` defaults to ``production``; when the project has ``@next/env`` (every project
  with ``next`` installed has), its ``.env*`` files are loaded for production, as Next does.
  Variables already in the environment win.
* The file is loaded with ``import()``, so CommonJS (``module.exports``), ESM (``.mjs``, or
  ``.js`` under ``"type": "module"``) and top-level ``await`` all work.
* A function export is called as ``fn('phase-production-server', {defaultConfig})`` and a
  Promise (from the module or from the function) is awaited.
* ``remotePatterns`` entries written as ``new URL(...)`` are turned into
  ``{protocol, hostname, port, pathname, search}`` as Next's config loader does.
* TypeScript configs need Node.js 22.6 or newer (type stripping).

A build works too: ``next build`` writes the config it resolved to
``<distDir>/required-server-files.json`` and copies it into an ``output: 'standalone'`` folder,
which keeps no next.config. Given the distDir, a standalone folder or that file (and no
next.config.* in the folder), imgopt reads it as JSON, without Node.js.

Errors are :class:`~imgopt.config.ConfigError` with a one-line message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .config import ConfigError

PHASE = "phase-production-server"
# The order Next.js looks for its config file in a project folder.
CONFIG_FILES = ("next.config.js", "next.config.mjs", "next.config.ts", "next.config.mts")
TS_SUFFIXES = (".ts", ".mts", ".cts")
MARKER = "@@imgopt-next-config@@"
# What `next build` writes to its distDir (and copies into `output: 'standalone'`): the resolved
# config, images defaults and all.
BUILT_CONFIG = "required-server-files.json"

# Used when a function-form config is called and the project has no `next` package to
# take Next's own defaultConfig from (the images part is what matters here).
_FALLBACK_DEFAULT_CONFIG = {
    "images": {
        "deviceSizes": [640, 750, 828, 1080, 1200, 1920, 2048, 3840],
        "imageSizes": [32, 48, 64, 96, 128, 256, 384],
        "path": "/_next/image",
        "loader": "default",
        "loaderFile": "",
        "domains": [],
        "disableStaticImages": False,
        "minimumCacheTTL": 14400,
        "formats": ["image/webp"],
        "maximumRedirects": 3,
        "dangerouslyAllowLocalIP": False,
        "dangerouslyAllowSVG": False,
        "contentSecurityPolicy": "script-src 'none'; frame-src 'none'; sandbox;",
        "contentDispositionType": "attachment",
        "remotePatterns": [],
        "unoptimized": False,
        "qualities": [75],
    }
}

# Run as `node --input-type=module -e SCRIPT -- <config path> <phase> <fallback defaultConfig>
# <EXPERIMENTAL_KEYS as JSON>`.
# Everything the config prints goes to stderr; the answer is one marked line on stdout.
_SCRIPT = r"""
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { spawnSync } from 'node:child_process'
import path from 'node:path'

const MARKER = '@@imgopt-next-config@@'
const [file, phase, fallbackJson, experimentalKeysJson] = process.argv.slice(1)
const send = (obj, code) => process.stdout.write('\n' + MARKER + JSON.stringify(obj) + '\n', () => process.exit(code))
for (const k of ['log', 'info', 'debug']) console[k] = (...a) => console.error(...a)
process.env.NODE_ENV ??= 'production'

function where(err) {
  const stack = String((err && err.stack) || '')
  const url = pathToFileURL(file).href
  for (const line of stack.split('\n')) {
    const m = line.match(/(?:^|\(|at )((?:file:\/\/)?\/[^()\s]*?:\d+)(?::\d+)?\)?\s*$/)
    if (m && (m[1].startsWith(file) || m[1].startsWith(url))) return m[1].replace(url, file)
  }
  if (err && err.name === 'SyntaxError') {  // ESM syntax errors carry no location; ask node --check
    const r = spawnSync(process.execPath, [...process.execArgv.filter((a) => a.startsWith('--experimental')), '--check', file], { encoding: 'utf8' })
    const first = (r.stderr || '').split('\n')[0]
    if (/:\d+$/.test(first)) return first.replace(url, file)
  }
  return ''
}

try {
  const req = createRequire(file)
  try {
    req('@next/env').loadEnvConfig(path.dirname(file), false, { info() {}, error() {} })
  } catch {}
  let defaultConfig
  try {
    defaultConfig = req('next/dist/server/config-shared').defaultConfig
  } catch {}
  defaultConfig ??= JSON.parse(fallbackJson)

  const mod = await import(pathToFileURL(file).href)
  let config = mod.default ?? mod
  if (config && config.__esModule && 'default' in config) config = config.default
  config = await config
  if (typeof config === 'function') config = await config(phase, { defaultConfig })
  if (config === null || typeof config !== 'object') {
    send({ error: `the config is not an object (got ${config === null ? 'null' : typeof config})` }, 1)
  } else {
    const images = config.images && typeof config.images === 'object' && !Array.isArray(config.images) ? { ...config.images } : config.images ?? null
    if (images && Array.isArray(images.remotePatterns)) {
      images.remotePatterns = images.remotePatterns.map((p) =>
        p instanceof URL
          ? { protocol: p.protocol.replace(/:$/, ''), hostname: p.hostname, port: p.port, pathname: p.pathname, search: p.search }
          : p)
    }
    const ex = config.experimental && typeof config.experimental === 'object' ? config.experimental : {}
    const experimental = Object.fromEntries(JSON.parse(experimentalKeysJson).filter((k) => k in ex).map((k) => [k, ex[k]]))
    send({ images, basePath: typeof config.basePath === 'string' ? config.basePath : '', trailingSlash: config.trailingSlash === true, assetPrefix: config.assetPrefix ?? '', experimental }, 0)
  }
} catch (err) {
  const name = (err && err.name) || 'Error'
  const message = String((err && err.message) ?? err).split('\n')[0]
  send({ error: `${name}: ${message}`, where: where(err) }, 1)
}
"""


def find_config_file(path: str | os.PathLike[str]) -> Path:
    """The config file: ``path`` itself, or in folder ``path`` the next.config.* Next would use,
    else the built config (``required-server-files.json``, in the folder, in its ``.next``, or in
    its one distDir of another name, as in a standalone folder built with a ``distDir``)."""
    p = Path(path)
    if p.is_dir():
        for name in (*CONFIG_FILES, BUILT_CONFIG, f".next/{BUILT_CONFIG}"):
            if (p / name).is_file():
                return (p / name).resolve()
        built = sorted(f for f in p.glob(f"*/{BUILT_CONFIG}") if f.is_file())
        if len(built) == 1:
            return built[0].resolve()
        if built:
            raise ConfigError(f"--next-config {path}: more than one build in that folder "
                              f"({', '.join(f.parent.name for f in built)}); give the one to use")
        raise ConfigError(f"--next-config {path}: no {', '.join(CONFIG_FILES)} in that folder, "
                          f"and no built {BUILT_CONFIG} in it or in a folder of it")
    if not p.is_file():
        raise ConfigError(f"--next-config {path}: no such file")
    return p.resolve()


# next.config's `experimental` options of the image optimizer that imgopt honours (carried with
# `images`, like basePath): the pixel limit and the transform's timeout
EXPERIMENTAL_KEYS = ("imgOptMaxInputPixels", "imgOptTimeoutInSeconds")


def _built_config(file: Path, shown: str) -> dict[str, Any]:
    """The config ``next build`` resolved and wrote to ``required-server-files.json`` (also in
    an ``output: 'standalone'`` folder, where no next.config is left): read without Node.js."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))["config"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--next-config {shown}: not a Next.js {BUILT_CONFIG} ({type(e).__name__}: {e})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--next-config {shown}: not a Next.js {BUILT_CONFIG} (its config is not an object)")
    return config


def node_version(node: str) -> tuple[int, int, int]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise ConfigError(f"--next-config: cannot tell the version of {node} (it printed {out!r})")
    return int(m[1]), int(m[2]), int(m[3])


def _ts_flags(shown: str, version: tuple[int, int, int]) -> list[str]:
    """Node flags that make ``import()`` of a .ts file work, or a ConfigError."""
    if version < (22, 6, 0):
        found = ".".join(map(str, version))
        raise ConfigError(
            f"--next-config {shown}: a TypeScript config needs Node.js 22.6 or newer to load "
            f"(found v{found}); use next.config.js or next.config.mjs, or install a newer Node.js"
        )
    # Type stripping is on by default from 22.18 / 23.6; before that it needs the flag.
    if version < (22, 18, 0) or (23, 0, 0) <= version < (23, 6, 0):
        return ["--experimental-strip-types"]
    return []


def load_next_config(path: str | os.PathLike[str], *, node: str | None = None,
                     timeout: float = 60.0) -> dict[str, Any]:
    """The ``images`` object of the Next.js config at ``path`` (a file or a project folder),
    with the config's ``basePath``, ``trailingSlash: true``, ``assetPrefix`` and
    ``experimental.imgOptMaxInputPixels`` / ``imgOptTimeoutInSeconds`` added to it when it has them. A config without ``images`` gives ``{}`` (Next's defaults).

    Runs ``node`` (found on PATH unless given). Raises ConfigError when node is missing, the
    config cannot be loaded, or its ``images`` is not an object.
    """
    shown = str(path)
    file = find_config_file(path)
    answer = _built_config(file, shown) if file.name == BUILT_CONFIG else _evaluate(file, shown, node, timeout)
    images = answer.get("images")
    if images is None:
        images = {}  # no images section: Next's defaults, as next start uses them
    if not isinstance(images, dict):
        raise ConfigError(f"--next-config {shown}: images: expected an object")
    if answer.get("basePath") and "basePath" not in images:
        # the site's basePath sits outside `images`; imgopt keeps it with them (config.py)
        images = {**images, "basePath": answer["basePath"]}
    if answer.get("trailingSlash") is True and "trailingSlash" not in images:
        images = {**images, "trailingSlash": True}  # likewise (Next's own check is `=== true`)
    if answer.get("assetPrefix") not in (None, "") and "assetPrefix" not in images:
        images = {**images, "assetPrefix": answer["assetPrefix"]}  # likewise (an http(s) one is a remote pattern)
    experimental = answer.get("experimental")
    if isinstance(experimental, dict):  # Next's limits of its optimizer: imgopt's defaults for the same
        for key in EXPERIMENTAL_KEYS:
            if experimental.get(key) is not None and key not in images:
                images = {**images, key: experimental[key]}
    return images


def _evaluate(file: Path, shown: str, node: str | None, timeout: float) -> dict[str, Any]:
    """The config object ``node`` makes of a next.config.* (its images, basePath, trailingSlash
    and assetPrefix)."""
    node = node or shutil.which("node")
    if not node:
        raise ConfigError(
            f"--next-config {shown}: reading a next.config needs Node.js, and \"node\" is not on PATH; "
            "install Node.js, or put the images section in a JSON file and use --config"
        )
    flags: list[str] = []
    if file.suffix in TS_SUFFIXES:
        flags = _ts_flags(shown, node_version(node))
    argv = [node, "--no-warnings", *flags, "--input-type=module", "-e", _SCRIPT, "--",
            str(file), PHASE, json.dumps(_FALLBACK_DEFAULT_CONFIG), json.dumps(EXPERIMENTAL_KEYS)]
    try:
        proc = subprocess.run(argv, cwd=file.parent, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, encoding="utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        raise ConfigError(f"--next-config {shown}: node did not finish loading it within {timeout:g} s") from None
    except OSError as e:
        raise ConfigError(f"--next-config {shown}: cannot run {node} ({e.strerror})") from None

    answer: dict[str, Any] | None = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                answer = json.loads(line[len(MARKER):])
            except json.JSONDecodeError:
                answer = None
            break
    if answer is None:
        last = next((ln.strip() for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "")
        detail = f": {last}" if last else ""
        raise ConfigError(f"--next-config {shown}: node exited with status {proc.returncode}{detail}")
    if "error" in answer:
        where = f" (at {answer['where']})" if answer.get("where") else ""
        raise ConfigError(f"--next-config {shown}: node could not load it: {answer['error']}{where}")
    return answer
