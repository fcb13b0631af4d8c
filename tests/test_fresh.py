"""Conditional requests: imgopt's ``fresh`` is the `fresh` npm package Next uses for its 304s
(next/dist/compiled/fresh), and a 304 carries only Vary, Cache-Control and ETag."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgopt.app import _token_list, fresh

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = ROOT / "tests/e2e/site/node_modules/next/dist/compiled/fresh/index.js"
# fresh 0.5.2 as Next 16 ships it (next/dist/compiled/fresh/index.js, MIT, (c) TJ Holowaychuk and
# Douglas Christopher Wilson); used when tests/e2e/site has no node_modules.
FRESH_JS = r"""
var r=/(?:^|,)\s*?no-cache\s*?(?:,|$)/;function fresh(e,a){var t=e["if-modified-since"];var s=e["if-none-match"];if(!t&&!s){return false}var i=e["cache-control"];if(i&&r.test(i)){return false}if(s&&s!=="*"){var f=a["etag"];if(!f){return false}var n=true;var u=parseTokenList(s);for(var _=0;_<u.length;_++){var o=u[_];if(o===f||o==="W/"+f||"W/"+o===f){n=false;break}}if(n){return false}}if(t){var p=a["last-modified"];var v=!p||!(parseHttpDate(p)<=parseHttpDate(t));if(v){return false}}return true}function parseHttpDate(e){var r=e&&Date.parse(e);return typeof r==="number"?r:NaN}function parseTokenList(e){var r=0;var a=[];var t=0;for(var s=0,i=e.length;s<i;s++){switch(e.charCodeAt(s)){case 32:if(t===r){t=r=s+1}break;case 44:a.push(e.substring(t,r));t=r=s+1;break;default:r=s+1;break}}a.push(e.substring(t,r));return a}
"""
DRIVER = r"""
const rl = require('readline').createInterface({ input: process.stdin, terminal: false })
rl.on('line', (line) => {
  const [headers, etag] = JSON.parse(line)
  process.stdout.write(JSON.stringify(fresh(headers, { etag })) + '\n')
})
"""

ETAG = '"abc"'


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, False),
        ({"if-none-match": ""}, False),
        ({"if-none-match": ETAG}, True),
        ({"if-none-match": f"W/{ETAG}"}, True),
        ({"if-none-match": f'"x", {ETAG}'}, True),
        ({"if-none-match": f'"x",{ETAG} '}, True),
        ({"if-none-match": f'"x",\t{ETAG}'}, False),  # only spaces are trimmed
        ({"if-none-match": "*"}, True),
        ({"if-none-match": " * "}, False),  # not "*": a token " *" compared with the ETag
        ({"if-none-match": '" * "'}, False),
        ({"if-none-match": "*, *"}, False),
        ({"if-none-match": '"x"'}, False),
        ({"if-none-match": ETAG, "cache-control": "no-cache"}, False),
        ({"if-none-match": ETAG, "cache-control": "max-age=0, no-cache"}, False),
        ({"if-none-match": ETAG, "cache-control": "NO-CACHE"}, True),  # case-sensitive
        ({"if-none-match": ETAG, "cache-control": "no-cache=x"}, True),
        ({"if-none-match": ETAG, "cache-control": "x no-cache"}, True),
        ({"if-none-match": ETAG, "cache-control": ",\u00a0no-cache\u3000"}, False),  # JavaScript's \s
        ({"if-none-match": ETAG, "cache-control": "\x1cno-cache"}, True),  # not JavaScript's \s
        ({"if-none-match": ETAG, "cache-control": "no-cache\n"}, False),
        ({"if-none-match": ETAG, "if-modified-since": "Wed, 21 Oct 2015 07:28:00 GMT"}, False),
        ({"if-modified-since": "Wed, 21 Oct 2015 07:28:00 GMT"}, False),
        ({"if-none-match": ETAG, "if-modified-since": ""}, True),
    ],
)
def test_fresh(headers, expected):
    assert fresh(headers, ETAG) is expected


def test_token_list():
    assert _token_list(' "a" , "b",\t"c", " * ",,') == ['"a"', '"b"', '\t"c"', '" * "', "", ""]
    assert _token_list("") == [""]


@pytest.fixture(scope="module")
def node_fresh():
    node = shutil.which("node")
    if node is None:
        pytest.fail("tests/test_fresh.py needs `node` (Node.js >= 20.9, as Next 16.5) on PATH")
    if INSTALLED.is_file():
        source = f"const fresh = require({json.dumps(str(INSTALLED))});\n" + DRIVER
    else:
        source = FRESH_JS + DRIVER
    proc = subprocess.Popen([node, "-e", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            encoding="utf-8", bufsize=1)

    def ask(headers: dict[str, str], etag: str) -> bool:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps([headers, etag]) + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    yield ask
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(10)


_pieces = st.sampled_from([ETAG, f"W/{ETAG}", '"x"', "W/", "*", " ", ",", "\t", '"', "abc", "\u00a0", "no-cache",
                           "NO-CACHE", "max-age=0", "=", ";", "\x0b", "\n"])
values = st.lists(_pieces, max_size=6).map("".join) | st.text(alphabet="*, \t\"Wabc/-no\u00a0", max_size=10)
header_sets = st.fixed_dictionaries({}, optional={"if-none-match": values, "cache-control": values,
                                                   "if-modified-since": st.sampled_from(["", "x"])})
etags = st.sampled_from([ETAG, f"W/{ETAG}", '"x"', "*", " * "])


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(headers=header_sets, etag=etags)
def test_fresh_matches_the_npm_package(node_fresh, headers, etag):
    assert fresh(headers, etag) is node_fresh(headers, etag), (headers, etag)


def test_304_carries_only_vary_cache_control_and_etag(server_d):
    url = server_d.url + "/_next/image?url=/test.jpg&w=64&q=75"
    ok = httpx.get(url, headers={"Accept": "image/webp"})
    assert ok.status_code == 200 and ok.headers["x-request-id"]
    r = httpx.get(url, headers={"Accept": "image/webp", "If-None-Match": ok.headers["etag"], "X-Request-Id": "r1"})
    assert r.status_code == 304 and r.content == b""
    transport = {"date", "server", "connection", "keep-alive", "transfer-encoding", "content-length"}
    assert set(r.headers) - transport == {"vary", "cache-control", "etag"}, dict(r.headers)
    assert "x-request-id" not in r.headers
    # a client repeating its conditional headers is answered as Next answers
    both = httpx.get(url, headers=[("Accept", "image/webp"), ("If-None-Match", '"x"'),
                                   ("If-None-Match", ok.headers["etag"])])
    assert both.status_code == 304
    nocache = httpx.get(url, headers=[("Accept", "image/webp"), ("If-None-Match", ok.headers["etag"]),
                                      ("Cache-Control", "max-age=0"), ("Cache-Control", "no-cache")])
    assert nocache.status_code == 200 and nocache.headers["x-request-id"]
    err = httpx.get(server_d.url + "/_next/image?url=/nope.jpg&w=64&q=75")
    assert err.status_code >= 400 and err.headers["x-request-id"]
