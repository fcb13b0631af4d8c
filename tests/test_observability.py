"""Issue #6, observability: /metrics (Prometheus), X-Request-Id, JSON access logs, /healthz JSON."""

from __future__ import annotations

import io
import json
import re
import time
import uuid

import httpx

from cluster import sample_sum, scrape
from conftest import PROFILE_C
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
    r = server_c.get(f"{origin.base_url}/test.gif", 399, 75, headers={"X-Request-Id": rid})
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while True:
        lines = [ln for ln in server_c.log_path.read_text().splitlines() if rid in ln]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["request_id"] == rid and record["type"] == "access"
    assert record["method"] == "GET" and record["path"] == "/_next/image" and record["status"] == 200
    assert record["bytes"] == len(r.content) and record["cache"] in ("MISS", "HIT")
    assert record["duration_ms"] >= 0 and "url=" in record["query"]


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

    # --workers 2: each worker process keeps its own share of the memo (imgopt/workers.py)
    srv = make_server(PROFILE_C, "--memory-cache-size", "1M", "--resized-cache-size", "4M", "--workers", "2")
    empty = scrape(srv.url)
    assert sample_sum(empty, "imgopt_resized_lookups", result="hit") == 0
    assert sample_sum(empty, "imgopt_resized_lookups", result="miss") == 0
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
    assert sample_sum(after, "imgopt_resized_lookups", result="miss") == 1
    assert sample_sum(after, "imgopt_resized_lookups", result="hit") == 1
