"""Shared pieces of the imgopt benchmarks (issue #5). Standard library + pyvips only.

* the corpus (``/tmp/peers/corpus`` built by ``../shared/bench/corpus.sh``; override with
  ``BENCH_CORPUS``), with the job lists the benches use;
* ``NEXT_ENCODERS``: the encoder settings Next.js 16 passes to sharp, written as pyvips calls,
  and ``raw_transform``: the raw-libvips baseline (``thumbnail_buffer`` + save, no imgopt layers);
* ``ssim``: SSIM computed with libvips image operations (gaussblur window), independent of the
  encoders, plus ``ssim_pure_python`` (a second, pure-Python implementation used as a self-check);
* CPU / RSS accounting from /proc (process tree, machine-wide "foreign" CPU = noise);
* starting/stopping a real ``python -m imgopt serve`` and a static origin (nginx, else
  ``python -m http.server``), all on 127.0.0.1, by pid;
* a tiny asyncio HTTP/1.1 client (light on CPU, so the load generator does not eat the
  2-core machine) with per-request latency.
"""

from __future__ import annotations

import asyncio
import glob
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pyvips

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
SHARED_BENCH = Path(os.environ.get("BENCH_SHARED", ROOT.parent / "shared" / "bench")).resolve()
CORPUS = Path(os.environ.get("BENCH_CORPUS", "/tmp/peers/corpus"))
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/imgopt-bench"))
CLK = os.sysconf("SC_CLK_TCK")

MIME = {"webp": "image/webp", "avif": "image/avif", "jpeg": "image/jpeg", "png": "image/png"}
# Accept headers exactly as ../shared/bench/common.py sends them (imgopt negotiates like Next).
ACCEPT = {
    "avif": "image/avif,image/webp,image/*;q=0.8,*/*;q=0.5",
    "webp": "image/webp,image/*;q=0.8,*/*;q=0.5",
    "jpeg": "image/jpeg,image/png,image/gif",
    "png": "image/jpeg,image/png,image/gif",  # PNG sources: the original type
}
VIPS_MAX_COORD = 10_000_000


# ------------------------------------------------------------------------------------ corpus
@dataclass
class Img:
    name: str
    format: str
    width: int
    height: int
    data: bytes = field(repr=False)
    has_alpha: bool = False
    pages: int = 1


def corpus_available() -> bool:
    return (CORPUS / "manifest.json").is_file()


def load_corpus(kinds: Iterable[str] = ("photo",)) -> list[Img]:
    """kinds: 'photo' (large JPEG/WebP photos), 'png' (PNG sources), 'small', 'all'."""
    with open(CORPUS / "manifest.json") as f:
        manifest = json.load(f)["images"]
    out = []
    kinds = set(kinds)
    for m in manifest:
        if m.get("pages", 1) > 1 or m["format"] == "svg":
            continue
        big = m["width"] >= 1000
        kind = "png" if m["format"] == "png" else ("photo" if big else "small")
        if "all" in kinds or kind in kinds:
            out.append(Img(m["name"], m["format"], m["width"], m["height"],
                           (CORPUS / m["name"]).read_bytes(), bool(m.get("has_alpha")), m.get("pages", 1)))
    return out


# ------------------------------------------------------------------------------------ encoders
def _q_avif_next(q: int) -> int:
    return max(int(q * 50 / 80 + 0.5), 1)  # Math.max(Math.round(q * 50/80), 1)


def _flatten(img: pyvips.Image) -> pyvips.Image:
    return img.flatten(background=[255] * (img.bands - 1)) if img.hasalpha() else img


# Next.js 16 image-optimizer/transform.js -> sharp 0.35 -> libvips, as pyvips keyword arguments:
#   avif({quality: round(q*50/80), effort: 3})   sharp default chromaSubsampling '4:4:4'
#   webp({quality})                                sharp defaults: effort 4, smartSubsample false
#   jpeg({quality, mozjpeg: true})                 trellis, overshoot deringing, optimised scans
#                                                  (progressive), quant table 3, optimise coding
#   png({quality})                                 palette, effort 7, compressionLevel 6
NEXT_ENCODERS: dict[str, Callable[[pyvips.Image, int], bytes]] = {
    "image/avif": lambda img, q: img.heifsave_buffer(Q=_q_avif_next(q), effort=3, compression="av1",
                                                     subsample_mode="off", keep="none"),
    "image/webp": lambda img, q: img.webpsave_buffer(Q=q, effort=4, keep="none"),
    "image/jpeg": lambda img, q: _flatten(img).jpegsave_buffer(
        Q=q, optimize_coding=True, trellis_quant=True, overshoot_deringing=True, optimize_scans=True,
        quant_table=3, interlace=True, subsample_mode="on", keep="none"),  # sharp: 4:2:0 at every quality
    "image/png": lambda img, q: img.pngsave_buffer(palette=True, Q=q, effort=7, compression=6, keep="none"),
}


def negotiated(fmt: str) -> str:
    """What params.negotiate gives for the loadgen Accept headers: avif/webp, else '' (original type)."""
    return MIME[fmt] if fmt in ("webp", "avif") else ""


def output_mime(img: Img, fmt: str) -> str:
    """The type imgopt (and Next) answer with for `fmt`'s Accept header: avif/webp, else the
    source's own type (PNG stays PNG, JPEG and WebP/AVIF sources become JPEG)."""
    if fmt in ("webp", "avif"):
        return MIME[fmt]
    return "image/png" if img.format == "png" else "image/jpeg"


def raw_thumbnail(buf: bytes, width: int) -> pyvips.Image:
    """The raw libvips resize: what any libvips-based optimizer has to do at minimum.

    To ``width``, the height following the aspect ratio, as Next.js resizes (sharp
    ``resize(width)``). Without ``height``, libvips fits the image in a width x width box, so a
    portrait photo came out smaller than Next's (and imgopt's) output and the baseline did less
    work than the job asks (wine-portrait.jpg at w=640: 640x427 instead of 640x960).
    """
    return pyvips.Image.thumbnail_buffer(buf, width, height=VIPS_MAX_COORD, size="down")


def raw_transform(buf: bytes, width: int, mime: str, q: int, encoders: dict | None = None) -> bytes:
    """Raw-libvips baseline: thumbnail_buffer + save with the given settings, nothing else."""
    enc = (encoders or NEXT_ENCODERS)[mime]
    return enc(raw_thumbnail(buf, width), q)


def imgopt_encoders() -> dict[str, Callable[[pyvips.Image, int], bytes]]:
    from imgopt import transform as T

    return {m: T.ENCODERS[m] for m in MIME.values() if m in T.ENCODERS}


# ------------------------------------------------------------------------------------ SSIM
def _srgb_flat(img: pyvips.Image) -> pyvips.Image:
    if img.interpretation not in ("srgb",) or img.format != "uchar":
        img = img.colourspace("srgb")
    if img.hasalpha():
        img = img.flatten(background=[255, 255, 255])
    if img.bands == 1:
        img = img.bandjoin([img, img])
    return img.extract_band(0, n=3).cast("float")


def reference_for(original: bytes, width: int, height: int) -> pyvips.Image:
    """High-quality reference at the output geometry: full decode (no shrink-on-load), EXIF
    rotation, sRGB, flattened on white, Lanczos3 resize in one step. Independent of the
    pipelines under test (imgopt uses shrink-on-load thumbnail, sharp its own pipeline)."""
    im = pyvips.Image.new_from_buffer(original, "").autorot()
    im = im.colourspace("srgb") if im.interpretation != "srgb" else im
    im = _srgb_flat(im)
    return im.resize(width / im.width, vscale=height / im.height, kernel="lanczos3").copy_memory()


def decode_output(body: bytes) -> pyvips.Image:
    return _srgb_flat(pyvips.Image.new_from_buffer(body, "")).copy_memory()


C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
SSIM_SIGMA = 1.5


def _blur(im: pyvips.Image) -> pyvips.Image:
    return im.gaussblur(SSIM_SIGMA, precision="float", min_ampl=0.01).copy_memory()


def _ssim_1band(x: pyvips.Image, y: pyvips.Image) -> float:
    mx, my = _blur(x), _blur(y)
    sxx = _blur(x * x) - mx * mx
    syy = _blur(y * y) - my * my
    sxy = _blur(x * y) - mx * my
    num = (mx * my * 2 + C1) * (sxy * 2 + C2)
    den = (mx * mx + my * my + C1) * (sxx + syy + C2)
    return (num / den).avg()


def luma(im: pyvips.Image) -> pyvips.Image:
    return (im[0] * 0.299 + im[1] * 0.587 + im[2] * 0.114).copy_memory()


def ssim(ref: pyvips.Image, out: pyvips.Image) -> dict[str, float]:
    """{'y': SSIM on BT.601 luma, 'rgb': mean SSIM over R, G, B} (Gaussian window, sigma 1.5)."""
    if (ref.width, ref.height) != (out.width, out.height):
        raise ValueError(f"size mismatch {ref.width}x{ref.height} vs {out.width}x{out.height}")
    y = _ssim_1band(luma(ref), luma(out))
    rgb = sum(_ssim_1band(ref[b].copy_memory(), out[b].copy_memory()) for b in range(3)) / 3
    return {"y": y, "rgb": rgb}


def ssim_of(original: bytes, body: bytes) -> dict[str, float]:
    out = decode_output(body)
    return ssim(reference_for(original, out.width, out.height), out)


def ssim_pure_python(a: list[list[float]], b: list[list[float]], sigma: float = SSIM_SIGMA) -> float:
    """Independent SSIM (plain Python lists, separable Gaussian, edge clamp) for the self-check."""
    r = int(math.floor(math.sqrt(-2 * sigma * sigma * math.log(0.01))))  # taps with amplitude >= 0.01
    k = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-r, r + 1)]
    s = sum(k)
    k = [v / s for v in k]
    h, w = len(a), len(a[0])

    def blur(m):
        t = [[sum(k[j + r] * m[y][min(max(x + j, 0), w - 1)] for j in range(-r, r + 1)) for x in range(w)] for y in range(h)]
        return [[sum(k[j + r] * t[min(max(y + j, 0), h - 1)][x] for j in range(-r, r + 1)) for x in range(w)] for y in range(h)]

    mul = lambda p, q: [[p[y][x] * q[y][x] for x in range(w)] for y in range(h)]  # noqa: E731
    mx, my = blur(a), blur(b)
    sxx, syy, sxy = blur(mul(a, a)), blur(mul(b, b)), blur(mul(a, b))
    tot = 0.0
    for yy in range(h):
        for xx in range(w):
            ux, uy = mx[yy][xx], my[yy][xx]
            vx, vy, cxy = sxx[yy][xx] - ux * ux, syy[yy][xx] - uy * uy, sxy[yy][xx] - ux * uy
            tot += ((2 * ux * uy + C1) * (2 * cxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2))
    return tot / (h * w)


def ssim_selfcheck() -> dict[str, float]:
    """Compare the libvips SSIM with the pure-Python one on a 48x48 crop of a real JPEG encode."""
    photo = load_corpus(["photo"])[0]
    src = _srgb_flat(pyvips.Image.thumbnail_buffer(photo.data, 320)).crop(100, 60, 48, 48).copy_memory()
    enc = src.cast("uchar").jpegsave_buffer(Q=20)
    dec = decode_output(enc)
    a, b = luma(src), luma(dec)
    to_list = lambda im: [[im.getpoint(x, y)[0] for x in range(im.width)] for y in range(im.height)]  # noqa: E731
    v_vips = _ssim_1band(a, b)
    v_py = ssim_pure_python(to_list(a), to_list(b))
    return {"vips": v_vips, "python": v_py, "abs_diff": abs(v_vips - v_py), "identity": _ssim_1band(a, a)}


# ------------------------------------------------------------------------------------ /proc
def host_busy_s() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for fn in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            out += [int(x) for x in open(fn).read().split()]
        except OSError:
            pass
    return out


def proc_tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo += _children(p)
    return seen


def cpu_s(pid: int) -> float:
    """utime+stime of pid, its threads, and its reaped children."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu_s(pid: int) -> float:
    return sum(cpu_s(p) for p in proc_tree(pid))


def rss_mb(pid: int) -> float:
    kb = 0
    for p in proc_tree(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
        except OSError:
            pass
    return kb / 1024


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuWindow:
    """CPU used between start and stop by: watched pids (server, origin), this process, and
    everything else on the machine ('foreign' = other users = noise)."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids = {k: v for k, v in pids.items() if v}
        self.t0 = self._snap()

    def _snap(self):
        return (time.monotonic(), host_busy_s(), self_cpu_s(), {k: tree_cpu_s(p) for k, p in self.pids.items()})

    def stop(self) -> dict[str, float]:
        t1 = self._snap()
        wall = t1[0] - self.t0[0]
        own = {k: t1[3][k] - self.t0[3][k] for k in self.pids}
        me = t1[2] - self.t0[2]
        foreign = max(t1[1] - self.t0[1] - me - sum(own.values()), 0.0)
        res = {f"{k}_cpu_s": round(v, 3) for k, v in own.items()}
        res.update({"client_cpu_s": round(me, 3), "wall_s": round(wall, 3),
                    "foreign_cpu_s": round(foreign, 3), "foreign_cores": round(foreign / wall, 3) if wall else 0.0})
        return res


def machine_noise(seconds: float = 3.0) -> float:
    b0, t0 = host_busy_s(), time.monotonic()
    time.sleep(seconds)
    return round((host_busy_s() - b0) / (time.monotonic() - t0), 3)


def bench_rounds(smoke: bool, default: int) -> tuple[int, int]:
    """(rounds, warmup_rounds) from BENCH_ROUNDS / BENCH_WARMUP, or the smoke minimum (1, 0)."""
    if smoke:
        return 1, 0
    return int(os.environ.get("BENCH_ROUNDS", default)), int(os.environ.get("BENCH_WARMUP", 1))


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: list[float]) -> float | None:
    return percentile([v for v in values if v is not None], 50)


# ------------------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited {proc.returncode}\n{log.read_text()[-3000:] if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_proc(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM our own child (by pid), wait, then SIGKILL that pid if needed."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Origin:
    """Static files of the corpus on 127.0.0.1 (nginx if installed, else python http.server)."""

    def __init__(self, root: Path = CORPUS, port: int | None = None):
        self.root, self.port = root, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.dir = WORK / f"origin-{self.port}"

    def start(self) -> "Origin":
        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "origin.log"
        if shutil.which("nginx") and os.environ.get("BENCH_ORIGIN", "nginx") == "nginx":
            d = self.dir
            (d / "tmp").mkdir(exist_ok=True)
            conf = d / "nginx.conf"
            conf.write_text(f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
  types {{ image/jpeg jpg jpeg; image/png png; image/webp webp; image/gif gif; image/svg+xml svg; application/json json; }}
  access_log off; sendfile on; keepalive_requests 100000;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  server {{ listen 127.0.0.1:{self.port}; root {self.root};
           location / {{ add_header Cache-Control "public, max-age=3600"; }} }}
}}
""")
            argv = ["nginx", "-c", str(conf), "-e", str(d / "error.log")]
        else:
            argv = [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                    "--directory", str(self.root)]
        self.proc = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_http(self.url + "/manifest.json", self.proc, 20, log)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        stop_proc(self.proc)


def images_config(origin_port: int, **extra: Any) -> dict:
    cfg = {
        "formats": ["image/avif", "image/webp"],
        "qualities": [74, 75, 76],
        "dangerouslyAllowLocalIP": True,
        "remotePatterns": [{"protocol": "http", "hostname": "127.0.0.1", "port": str(origin_port), "pathname": "/**"}],
        "deviceSizes": [640, 750, 828, 1080, 1200, 1920, 2048, 3840],
    }
    cfg.update(extra)
    return cfg


# Variants of the server process environment, for the threads/allocator experiments.
JEMALLOC = next((p for p in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                             "/usr/lib/libjemalloc.so.2") if os.path.exists(p)), None)


def variant_env(variant: str) -> dict[str, str] | None:
    """None when the variant is not available on this machine (e.g. no libjemalloc2)."""
    env: dict[str, str] = {}
    for part in variant.split("+"):
        if part in ("default", ""):
            continue
        elif part.startswith("arena"):  # arena2: MALLOC_ARENA_MAX=2 (glibc)
            env["MALLOC_ARENA_MAX"] = part[5:] or "2"
        elif part.startswith("mmap"):  # mmap256: fixed MALLOC_MMAP_THRESHOLD_ of 256 KiB (glibc)
            env["MALLOC_MMAP_THRESHOLD_"] = str(int(part[4:] or 256) * 1024)
        elif part == "jemalloc":
            if not JEMALLOC:
                return None
            env["LD_PRELOAD"] = JEMALLOC
        elif part == "nomem":  # no in-memory tiers (hot entries, resized pixels): allocator creep alone
            env["IMGOPT_MEMORY_CACHE_SIZE"] = "0"
            env["IMGOPT_RESIZED_CACHE_SIZE"] = "0"
        elif part == "lrs":  # diskcache eviction_policy least-recently-stored (reads do not write)
            env["BENCH_DISKCACHE_POLICY"] = "least-recently-stored"
        elif part == "mallopt":  # arena2+mmap256 set in-process by _launch.py via mallopt()
            env["BENCH_MALLOPT"] = "arena=2,mmap=262144"
        elif part.startswith("trim"):  # trim or trim<seconds>: periodic malloc_trim(0) (launcher)
            env["BENCH_MALLOC_TRIM_S"] = part[4:] or "5"
        elif part.startswith("vc"):  # vc1, vc2: libvips threads per image
            env["VIPS_CONCURRENCY"] = part[2:]
        elif part.startswith("w"):  # w1, w2, w4: imgopt worker threads
            env["BENCH_WORKERS"] = part[1:]
        else:
            raise ValueError(f"unknown variant part {part!r}")
    return env


class Server:
    """`python -m imgopt serve` (via benchmarks/_launch.py, which only adds the optional
    malloc_trim thread) on a free port, with a wiped cache dir."""

    def __init__(self, origin_port: int, variant: str = "default", workers: int | None = None,
                 config_extra: dict | None = None, port: int | None = None):
        self.variant = variant
        env = variant_env(variant)
        if env is None:
            raise RuntimeError(f"variant {variant} not available here")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = WORK / f"imgopt-{self.port}"
        self.cache = self.dir / "cache"
        self.workers = int(env.pop("BENCH_WORKERS", 0)) or workers
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.cfg = images_config(origin_port, **(config_extra or {}))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self.dir / "images.json").write_text(json.dumps(self.cfg))
        argv = [sys.executable, str(BENCH_DIR / "_launch.py"), "serve", "--config", str(self.dir / "images.json"),
                "--port", str(self.port), "--cache-dir", str(self.cache), "--log-level", "warning"]
        if self.workers:
            argv += ["--workers", str(self.workers)]
        self.log = self.dir / "imgopt.log"
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_http(self.url + "/healthz", self.proc, 60, self.log)
        return self

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def stop(self) -> None:
        stop_proc(self.proc)
        shutil.rmtree(self.cache, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def image_url(base: str, origin: str, name: str, w: int, q: int, bust: str | None = None) -> str:
    src = f"{origin}/{name}" + (f"?v={bust}" if bust else "")
    return f"{base}/_next/image?url={urllib.parse.quote(src, safe='')}&w={w}&q={q}"


# ------------------------------------------------------------------------------------ HTTP client
@dataclass
class Resp:
    status: int
    ctype: str
    body: bytes
    ms: float
    err: str | None = None


class _Conn:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.r, self.w = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.w:
            self.w.close()
        self.r = self.w = None


async def _request(conn: _Conn, path: str, accept: str, keepalive: bool) -> tuple[int, dict, bytes]:
    if conn.w is None:
        await conn.open()
    assert conn.r and conn.w
    conn.w.write(f"GET {path} HTTP/1.1\r\nHost: {conn.host}:{conn.port}\r\nAccept: {accept}\r\n"
                 f"Connection: {'keep-alive' if keepalive else 'close'}\r\n\r\n".encode())
    head = await conn.r.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await conn.r.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await conn.r.readline()).split(b";")[0], 16)
            chunk = await conn.r.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await conn.r.read()
    if not keepalive or headers.get("connection", "").lower() == "close":
        conn.close()
    return status, headers, body


async def fetch_many(base: str, jobs: list[tuple[str, str]], concurrency: int, keepalive: bool = False,
                     timeout: float = 120.0, until: float | None = None) -> list[Resp]:
    """jobs: (path+query, accept). Each of `concurrency` workers takes the next job; with
    keepalive=False every request opens a new connection (as ../shared/bench/loadgen.py does
    for cold passes). `until` (monotonic deadline): keep cycling through jobs until then."""
    u = urllib.parse.urlsplit(base)
    out: list[Resp] = []
    idx = 0

    async def worker() -> None:
        nonlocal idx
        conn = _Conn(u.hostname or "127.0.0.1", u.port or 80)
        while True:
            if until is None and idx >= len(jobs):
                break
            if until is not None and time.monotonic() >= until:
                break
            path, accept = jobs[idx % len(jobs)]
            idx += 1
            st = time.perf_counter()
            try:
                status, headers, body = await asyncio.wait_for(_request(conn, path, accept, keepalive), timeout)
                out.append(Resp(status, headers.get("content-type", ""), body, (time.perf_counter() - st) * 1000,
                                None if status == 200 else f"HTTP {status}: {body[:120]!r}"))
            except Exception as e:  # noqa: BLE001 - every failure is a counted error
                conn.close()
                out.append(Resp(0, "", b"", (time.perf_counter() - st) * 1000, f"{type(e).__name__}: {e}"[:200]))
        conn.close()

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return out


def path_of(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return u.path + ("?" + u.query if u.query else "")


def lat_summary(ms: list[float]) -> dict[str, float | None]:
    return {f"p{p}_ms": (round(percentile(ms, p), 2) if ms else None) for p in (50, 95, 99)}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None
