"""/metrics (Prometheus), X-Request-Id, JSON access logs, /healthz JSON."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cluster import sample_sum, scrape
from conftest import PROFILE_C, ROOT
from imgopt.errors import NOT_ALLOWED, UPSTREAM_INVALID, UPSTREAM_TIMEOUT, ImageError
from imgopt.metrics import short_format, upstream_error_kind


def test_metrics_cover_requests_transforms_cache_pool_and_upstream(server_c, origin):
    before = scrape(server_c.url)
    url = f"{origin.base_url}/test.png?m={uuid.uuid4().hex}"
    a, b = (server_c.get(url, 399, 75, accept="image/webp") for _ in range(2))
    assert (a.headers["x-nextjs-cache"], b.headers["x-nextjs-cache"]) == ("MISS", "HIT")
    missing = server_c.get(f"{origin.base_url}/nope-{uuid.uuid4().hex}.png", 399, 75)
    assert missing.status_code == 404
    after = scrape(server_c.url)

    def delta(sample: str, **labels: str) -> float:
        return sample_sum(after, sample, **labels) - sample_sum(before, sample, **labels)

    assert delta("imgopt_http_requests_total", route="/_next/image", status="200") == 2
    assert delta("imgopt_http_requests_total", route="/_next/image", status="404") == 1
    assert delta("imgopt_http_request_duration_seconds_count", route="/_next/image") == 3
    assert delta("imgopt_transform_seconds_count", format="webp", kind="optimized") == 1
    assert delta("imgopt_cache_lookups_total", tier="disk", result="miss") >= 2
    assert delta("imgopt_cache_lookups_total", tier="memory", result="hit") == 1  # repeats: the hot tier
    assert delta("imgopt_image_responses_total", cache="HIT") == 1
    assert delta("imgopt_upstream_errors_total", kind="status_404") == 1
    assert delta("imgopt_upstream_bytes_total") == (origin.root / "test.png").stat().st_size
    assert delta("imgopt_response_bytes_total", route="/_next/image") == len(a.content) + len(b.content) + len(missing.content)
    names = {s.name for s in after}
    assert {"imgopt_pool_queue_depth", "imgopt_pool_running", "imgopt_pool_admitted"} <= names
    assert sample_sum(after, "imgopt_pool_capacity") > 0
    assert "process_resident_memory_bytes" in names  # the default process collector comes along


def test_request_id_is_echoed_or_generated(server_c):
    r = httpx.get(server_c.url + "/_next/image?url=/test.png&w=399&q=75", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = httpx.get(server_c.url + "/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    hostile = httpx.get(server_c.url + "/healthz", headers={"X-Request-Id": "a b\"<script>" + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])


def test_access_log_is_one_json_object_per_request(server_c, origin):
    rid = f"test-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    r = server_c.get(f"{origin.base_url}/test.gif", 399, 75, headers={"X-Request-Id": rid, "User-Agent": "obs-test/1"})
    took_ms = (time.monotonic() - t0) * 1000
    assert r.status_code == 200
    deadline = time.monotonic() + 30
    while True:
        lines = [ln for ln in server_c.log_path.read_text().splitlines() if rid in ln and '"imgopt.access"' in ln]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["logger"] == "imgopt.access" and record["level"] == "info"
    assert record["request_id"] == rid and record["message"] == "GET /_next/image 200"
    assert record["method"] == "GET" and record["path"] == "/_next/image" and record["status"] == 200
    assert record["bytes"] == len(r.content) and record["cache"] in ("MISS", "HIT")
    assert 0 < record["duration_ms"] <= took_ms  # measured inside the client's round trip
    assert record["query"] == str(r.request.url.query, "ascii") and "url=" in record["query"]
    assert record["client"] == "127.0.0.1" and record["user_agent"] == "obs-test/1"


def test_healthz_is_json_in_disk_mode(server_c):
    r = httpx.get(server_c.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "cache": "disk"}
    assert r.headers["cache-control"] == "no-store"


def test_upstream_error_kinds_and_format_labels():
    assert upstream_error_kind(ImageError(504, UPSTREAM_TIMEOUT)) == "timeout"
    assert upstream_error_kind(ImageError(413, UPSTREAM_INVALID)) == "too_large"
    assert upstream_error_kind(ImageError(508, UPSTREAM_INVALID)) == "redirects"
    assert upstream_error_kind(ImageError(400, NOT_ALLOWED)) == "not_allowed"
    assert upstream_error_kind(ImageError(502, f"{UPSTREAM_INVALID} (host could not be resolved)")) == "dns"
    assert upstream_error_kind(ImageError(502, f"{UPSTREAM_INVALID} (ConnectError)")) == "connect"
    assert upstream_error_kind(ImageError(404, UPSTREAM_INVALID)) == "status_404"
    assert upstream_error_kind(ImageError(502, UPSTREAM_INVALID)) == "bad_response"
    assert [short_format(m) for m in ("image/webp", "image/svg+xml", "image/avif", "bogus")] == [
        "webp", "svg", "avif", "other"]


def test_metrics_show_the_bytes_the_in_process_caches_hold(make_server, origin):
    """imgopt_memory_bytes: what the hot-response tier and the resized-pixels memo hold now, so an
    operator can tell bounded cache memory from anything else in the RSS."""
    from PIL import Image

    # --workers 2: the worker processes share one memo (memfds the pool keeps, imgopt/workers.py)
    srv = make_server(PROFILE_C, "--memory-cache-size", "1M", "--resized-cache-size", "4M", "--workers", "2")
    empty = scrape(srv.url)
    assert sample_sum(empty, "imgopt_resized_lookups_total", result="hit") == 0
    assert sample_sum(empty, "imgopt_resized_lookups_total", result="miss") == 0
    assert sample_sum(empty, "imgopt_memory_bytes", cache="responses") == 0
    assert sample_sum(empty, "imgopt_memory_bytes", cache="resized") == 0
    assert sample_sum(empty, "imgopt_memory_limit_bytes", cache="responses") == 1024 * 1024
    assert sample_sum(empty, "imgopt_memory_limit_bytes", cache="resized") == 4 * 1024 * 1024
    url = f"{origin.base_url}/test.png?m={uuid.uuid4().hex}"
    webp = srv.get(url, 399, 75, accept="image/webp")
    avif = srv.get(url, 399, 75, accept="image/avif")
    assert webp.headers["content-type"] == "image/webp" and avif.headers["content-type"] == "image/avif"
    after = scrape(srv.url)
    assert sample_sum(after, "imgopt_memory_bytes", cache="responses") == len(webp.content) + len(avif.content)
    w, h = Image.open(io.BytesIO(webp.content)).size
    bands = 4 if Image.open(io.BytesIO(webp.content)).mode in ("RGBA", "LA") else 3
    # one resize shared by both formats: 8-bit pixels, held once
    assert sample_sum(after, "imgopt_memory_bytes", cache="resized") == w * h * bands
    # the second format found the first one's resize
    assert sample_sum(after, "imgopt_resized_lookups_total", result="miss") == 1
    assert sample_sum(after, "imgopt_resized_lookups_total", result="hit") == 1


def _families(base_url: str) -> dict[str, Any]:
    r = httpx.get(base_url + "/metrics", timeout=10)
    assert r.status_code == 200
    return {f.name: f for f in text_string_to_metric_families(r.text)}


# What each imgopt metric is; a new metric must be added here and to docs/operations.md.
IMGOPT_METRICS = {
    "imgopt_http_requests": "counter", "imgopt_http_request_duration_seconds": "histogram",
    "imgopt_response_bytes": "counter", "imgopt_image_responses": "counter",
    "imgopt_transform_seconds": "histogram", "imgopt_transform_errors": "counter",
    "imgopt_upstream_bytes": "counter", "imgopt_upstream_errors": "counter",
    "imgopt_upstream_fetch_seconds": "histogram",
    "imgopt_cache_lookups": "counter", "imgopt_cache_errors": "counter", "imgopt_cache_backend_up": "gauge",
    "imgopt_cluster_locks": "counter",
    "imgopt_pool_admitted": "gauge", "imgopt_pool_running": "gauge", "imgopt_pool_queue_depth": "gauge",
    "imgopt_pool_capacity": "gauge", "imgopt_pool_idle_releases": "counter",
    "imgopt_memory_bytes": "gauge", "imgopt_memory_limit_bytes": "gauge", "imgopt_resized_lookups": "counter",
    "imgopt_build_info": "gauge",  # an Info metric: constant 1, the versions in its labels
    "imgopt_http_rejected": "counter", "imgopt_encoded_bodies": "counter",
    "imgopt_cache_degraded": "gauge", "imgopt_cache_db_damaged": "counter",
    "imgopt_workers_ready": "gauge", "imgopt_worker_restarts": "counter", "imgopt_worker_pid": "gauge",
    "imgopt_worker_rss_bytes": "gauge",
}


def test_every_metric_has_its_type_and_is_documented(server_c, origin):
    """Values that only grow are counters (exposed as *_total), levels are gauges; every imgopt
    metric is in docs/operations.md's table."""
    r = server_c.get(f"{origin.base_url}/test.png?m={uuid.uuid4().hex}", 399, 75)
    assert r.status_code == 200
    families = {name: f for name, f in _families(server_c.url).items() if name.startswith("imgopt_")}
    # the Redis-only ones (cache errors, backend up, cluster locks) appear once used
    optional = {"imgopt_cache_errors", "imgopt_cache_backend_up", "imgopt_cluster_locks", "imgopt_transform_errors",
                "imgopt_upstream_errors", "imgopt_http_rejected", "imgopt_encoded_bodies", "imgopt_cache_degraded",
                "imgopt_cache_db_damaged"}
    assert set(IMGOPT_METRICS) - optional <= set(families) <= set(IMGOPT_METRICS)
    for name, family in families.items():
        assert family.type == IMGOPT_METRICS[name], name
        if family.type == "counter":
            assert all(s.name == f"{name}_total" for s in family.samples), name
    docs = (ROOT / "docs" / "operations.md").read_text()
    for name, kind in IMGOPT_METRICS.items():
        shown = f"{name}_total" if kind == "counter" else name
        assert f"`{shown}`" in docs, shown


def test_build_info_names_the_versions(server_c):
    import platform

    import pyvips

    import imgopt

    # the workers report their libvips (the server process does not load it): "unknown" until one started
    deadline = time.monotonic() + 60
    while (sample := _families(server_c.url)["imgopt_build_info"].samples[0]).labels["libvips"] == "unknown":
        assert time.monotonic() < deadline, "no worker reported its libvips version"
        time.sleep(0.05)
    assert sample.name == "imgopt_build_info" and sample.value == 1
    assert sample.labels == {"version": imgopt.__version__, "python": platform.python_version(),
                             "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"}


def test_upstream_fetch_latency_by_source_and_outcome(make_server, origin, corpus):
    def counts(url: str) -> dict[tuple[str, str], float]:
        return {(s.labels["source"], s.labels["outcome"]): s.value for s in scrape(url)
                if s.name == "imgopt_upstream_fetch_seconds_count" and s.value}

    srv = make_server(PROFILE_C, "--origin", origin.base_url, "--fetch-timeout", "0.5")
    assert counts(srv.url) == {}
    assert srv.get(f"{origin.base_url}/test.png", 399, 75).status_code == 200
    assert srv.get(f"{origin.base_url}/missing.png", 399, 75).status_code == 404
    assert srv.get("/test.jpg", 399, 75).status_code == 200  # relative: from --origin
    assert srv.get(f"{origin.base_url}/hang", 399, 75).status_code == 504  # never answers
    assert counts(srv.url) == {("remote", "ok"): 1, ("remote", "error"): 1, ("origin", "ok"): 1,
                               ("remote", "timeout"): 1}
    # the timeout's observation is the --fetch-timeout it waited (asyncio may fire a timer a
    # little early, hence not exactly 0.5)
    assert sample_sum(scrape(srv.url), "imgopt_upstream_fetch_seconds_sum", source="remote", outcome="timeout") > 0.45
    local = make_server(None, "--local-root", str(corpus))
    assert local.get("/test.png", 640, 75).status_code == 200
    assert counts(local.url) == {("local", "ok"): 1}


def test_metrics_port_serves_metrics_off_the_main_port(make_server, corpus):
    from conftest import free_port

    port = free_port()
    srv = make_server(None, "--local-root", str(corpus), "--metrics-port", str(port))
    assert httpx.get(srv.url + "/metrics").status_code == 404  # not on the public port
    assert srv.get("/test.png", 640, 75).status_code == 200
    samples = scrape(f"http://127.0.0.1:{port}")
    # the same registry: the main port's requests are counted there
    assert sample_sum(samples, "imgopt_http_requests_total", route="/_next/image", status="200") == 1
    assert sample_sum(samples, "imgopt_http_requests_total", route="/metrics", status="404") == 1
    assert sample_sum(samples, "imgopt_build_info") == 1


def test_metrics_port_in_use_is_a_clear_error(corpus):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "imgopt", "serve", "--port", "0", "--local-root", str(corpus),
                            "--metrics-port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    (line,) = [json.loads(line) for line in r.stderr.splitlines() if "metrics-port" in line]
    assert line["level"] == "error" and line["message"].startswith(f"--metrics-port {port}: cannot listen (")
