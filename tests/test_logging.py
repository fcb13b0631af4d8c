"""Logs: one format (JSON lines, or text with --log-format text) for the access log, imgopt's
own lines and uvicorn's, all on stderr; request ids on every line of a request; levels checked."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ROOT, ImgoptServer
from imgopt import logs

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TEXT_LINE = re.compile(r"(?P<time>\S+) (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<logger>[\w.]+): (?P<message>.*)")


class SplitStreams(ImgoptServer):
    """An imgopt process whose stdout and stderr are kept apart."""

    def start(self, timeout: float = 30) -> "SplitStreams":
        self.out_path = self.tmp / "stdout.log"
        self.log = open(self.log_path, "ab")
        self.out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self.out, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"imgopt did not start:\n{self.log_path.read_text()}")

    def stop_and_read(self) -> tuple[str, str]:
        """Stop the process (so every line is written) and return (stdout, stderr)."""
        assert self.stop() == 0
        self.out.close()
        return self.out_path.read_text(), self.log_path.read_text()


@pytest.fixture
def split_server(tmp_path: Path, corpus: Path):
    started: list[SplitStreams] = []

    def make(*args: str, env: dict[str, str] | None = None) -> SplitStreams:
        srv = SplitStreams(tmp_path / f"srv{len(started)}", None, "--local-root", str(corpus), *args, env=env).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()


def _exercise(srv: ImgoptServer) -> str:
    """A request that logs an app warning (a truncated JPEG is served as its own bytes) and an
    access line, both under the request id the client sent; and one /healthz."""
    rid = f"log-{uuid.uuid4().hex}"
    r = srv.get("/bad/truncated.jpg", 640, 75, headers={"X-Request-Id": rid})
    assert r.status_code == 200 and r.headers["x-request-id"] == rid
    assert r.headers["content-type"] == "image/jpeg"  # the original bytes: the fallback
    assert httpx.get(srv.url + "/healthz").status_code == 200
    return rid


def test_every_line_is_one_json_object_on_stderr(split_server):
    srv = split_server()
    before = datetime.now(timezone.utc)
    rid = _exercise(srv)
    out, err = srv.stop_and_read()
    after = datetime.now(timezone.utc)
    assert out == ""  # one stream: everything is on stderr
    records = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    assert records
    for rec in records:
        assert {"level", "time", "logger", "message"} <= rec.keys(), rec
        assert rec["level"] in logs.LEVELS
        assert ISO_UTC.fullmatch(rec["time"]), rec["time"]
        when = datetime.fromisoformat(rec["time"].replace("Z", "+00:00"))
        assert before - timedelta(seconds=60) <= when <= after + timedelta(seconds=1)
    by_logger: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_logger.setdefault(rec["logger"], []).append(rec)
    # uvicorn's own lines, in the same format
    assert any(rec["message"].startswith("Uvicorn running on http://127.0.0.1:") for rec in by_logger["uvicorn.error"])
    # the app's warning, logged while answering the request, carries its id
    warnings = [rec for rec in by_logger["imgopt"] if "could not optimize" in rec["message"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert warnings[0]["request_id"] == rid and "/bad/truncated.jpg" in warnings[0]["message"]
    # one access line for the image (none for /healthz), with the same id
    access = by_logger["imgopt.access"]
    assert len(access) == 1
    assert access[0]["request_id"] == rid and access[0]["status"] == 200 and access[0]["cache"] == "MISS"
    assert access[0]["message"] == "GET /_next/image 200"
    # lines outside a request have no request id
    assert all("request_id" not in rec for rec in by_logger["uvicorn.error"])
    # no line per upstream request from httpx at info
    assert "httpx" not in by_logger


def test_text_format(split_server):
    srv = split_server("--log-format", "text")
    rid = _exercise(srv)
    out, err = srv.stop_and_read()
    assert out == ""
    lines = err.splitlines()
    parsed = [TEXT_LINE.fullmatch(line) for line in lines]
    assert lines and all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m]
    assert all(ISO_UTC.fullmatch(m["time"]) for m in parsed if m)
    access = [m for m in parsed if m and m["logger"] == "imgopt.access"]
    assert len(access) == 1
    assert access[0]["message"].startswith(f"GET /_next/image 200 request_id={rid} ")
    assert ' cache="MISS"' in access[0]["message"]
    warning = [m for m in parsed if m and m["level"] == "WARNING" and m["logger"] == "imgopt"]
    assert len(warning) == 1 and warning[0]["message"].endswith(f"request_id={rid}")


def test_env_variable_sets_the_format_and_level_filters(split_server):
    srv = split_server("--log-level", "warning", env={"IMGOPT_LOG_FORMAT": "text"})
    rid = _exercise(srv)
    _out, err = srv.stop_and_read()
    lines = err.splitlines()
    assert lines and all(TEXT_LINE.fullmatch(line) for line in lines)
    # warning and above only: the app's warning, no access line, no uvicorn info lines
    levels = {TEXT_LINE.fullmatch(line)["level"] for line in lines}  # type: ignore[index]
    assert levels <= {"WARNING", "ERROR", "CRITICAL"}
    assert [line for line in lines if rid in line] == [line for line in lines if "could not optimize" in line]
    assert len([line for line in lines if rid in line]) == 1


@pytest.mark.parametrize("args,env,message", [
    (["--log-level", "bogus"], {}, "--log-level: invalid value 'bogus' (expected debug, info, warning, error or critical)"),
    ([], {"IMGOPT_LOG_LEVEL": "verbose"}, "IMGOPT_LOG_LEVEL: invalid value 'verbose'"),
    (["--log-format", "xml"], {}, "--log-format: invalid value 'xml' (expected json or text)"),
    ([], {"IMGOPT_LOG_FORMAT": "logfmt"}, "IMGOPT_LOG_FORMAT: invalid value 'logfmt'"),
    (["--metrics-port", "70000"], {}, "--metrics-port: invalid value '70000' (must be 1 to 65535)"),
])
def test_bad_log_and_metrics_flags_exit_2_with_a_message(args, env, message):
    import os

    r = subprocess.run([sys.executable, "-m", "imgopt", "serve", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=60)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and r.stdout == ""


def test_levels_are_case_insensitive():
    from imgopt.cli import build_parser, resolve_options

    values = resolve_options(build_parser().parse_args(["serve", "--log-level", "WARNING", "--log-format", "Text"]), {})
    assert values["log_level"] == "warning" and values["log_format"] == "text"


def test_formatter_adds_the_request_id_and_exceptions():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure("info", "json", stream)
        log = logging.getLogger("imgopt.test")
        token = logs.REQUEST_ID.set("rid-1")
        try:
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed on %s", "x.png")
        finally:
            logs.REQUEST_ID.reset(token)
        log.debug("not shown below info")
        log.info("outside", extra={logs.FIELDS: {"status": 200, "message": "kept out"}})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "error" and first["logger"] == "imgopt.test" and first["message"] == "failed on x.png"
    assert first["request_id"] == "rid-1"
    assert first["exception"].startswith("Traceback") and "ValueError: boom" in first["exception"]
    # extra fields never replace the standard keys
    assert second == {"level": "info", "time": second["time"], "logger": "imgopt.test", "message": "outside",
                      "status": 200}


def test_configure_refuses_unknown_levels_and_formats():
    with pytest.raises(ValueError):
        logs.configure("verbose", "json", io.StringIO())
    with pytest.raises(ValueError):
        logs.configure("info", "yaml", io.StringIO())
