"""No single image can stall, crash or flood the service: libvips's messages are bounded per
image (imgopt/vipslog.py), and image work runs in supervised worker processes (imgopt/workers.py)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import httpx


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 16, height: int = 16, before_idat: bytes = b"") -> bytes:
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    rows = b"".join(b"\x00" + bytes((x * 7 + y * 3) % 256 for x in range(3 * width)) for y in range(height))
    return b"\x89PNG\r\n\x1a\n" + ihdr + before_idat + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def text_flood(chunks: int = 500_000) -> bytes:
    """A small PNG behind `chunks` empty tEXt chunks: libvips warns for each one, every time it
    reads the header."""
    return png(before_idat=_chunk(b"tEXt", b"") * chunks)


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def test_a_png_chunk_flood_logs_a_bounded_number_of_lines(make_server, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "flood.png").write_bytes(text_flood())
    (root / "plain.png").write_bytes(png(64, 64))
    srv = make_server(None, "--local-root", str(root), "--transform-timeout", "60")
    before = len(log_lines(srv.log_path))
    r = srv.get("/flood.png", 64, 75)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/webp"
    flood_lines = log_lines(srv.log_path)[before:]
    assert any("tEXt" in line for line in flood_lines)  # reported: the first message and a count
    assert any("messages while processing an image" in line for line in flood_lines)
    assert len(flood_lines) < 20, "\n".join(flood_lines[:40])

    before = len(log_lines(srv.log_path))
    assert srv.get("/plain.png", 64, 75).status_code == 200
    plain_lines = log_lines(srv.log_path)[before:]
    assert not [line for line in plain_lines if "VIPS" in line or "pyvips" in line], plain_lines
