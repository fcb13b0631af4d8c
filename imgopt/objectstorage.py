"""Buckets in object storage (S3, GCS, Azure) as named on the command line, and their clients.

``--local-root s3://bucket/prefix`` and ``--cache s3://bucket/prefix`` are parsed once into a
:class:`BucketURL`; :func:`connect` opens an `obstore <https://developmentseed.org/obstore/>`_
store for one (Rust ``object_store``: S3, GCS and Azure behind one API). Credentials, region and
endpoint come from where the cloud's own tools read them: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` for an
S3-compatible store (``AWS_ALLOW_HTTP=true`` for a plain-http one), web identity and instance
metadata; ``GOOGLE_*`` and ``AZURE_*`` likewise.

obstore is imported only when a bucket is opened, so a server without one never loads it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

SCHEMES = ("s3", "gs", "az")
_ENV_PREFIX = {"s3": "AWS_", "gs": "GOOGLE_", "az": "AZURE_"}
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


@dataclass(frozen=True)
class BucketURL:
    """``scheme://bucket/prefix``: a bucket (container for Azure) and a key prefix without slashes at its ends."""

    scheme: str  # 's3' | 'gs' | 'az'
    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}" if self.prefix else f"{self.scheme}://{self.bucket}"

    def key(self, relative: str) -> str:
        """The full object key of a key relative to the prefix (for messages and lifecycle rules)."""
        return f"{self.prefix}/{relative}" if self.prefix else relative


def is_bucket_url(text: str) -> bool:
    return text.strip().lower().split("://", 1)[0] in SCHEMES and "://" in text


def parse_bucket_url(text: str) -> BucketURL:
    """``s3://bucket/some/prefix`` → BucketURL; ValueError with the reason otherwise."""
    scheme, sep, rest = text.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"expected {', '.join(s + '://bucket/prefix' for s in SCHEMES)}")
    if any(c in rest for c in "?#\\") or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in rest):
        raise ValueError("a bucket URL has no query, fragment, backslash, space or control character")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not a bucket name")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError("the prefix has a '.' or '..' segment")
    return BucketURL(scheme, bucket, "/".join(parts))


def connect(url: BucketURL, timeout: float, retries: int = 0) -> Any:
    """An obstore store rooted at the URL's prefix; each request bounded by ``timeout`` seconds.

    Retries are off by default (the cache must fail fast and let its circuit breaker decide);
    obstore's own default retries for minutes.
    """
    from obstore.store import from_url

    options: dict[str, Any] = {"timeout": f"{max(1, int(timeout * 1000))}ms",
                               "connect_timeout": f"{max(1, int(min(timeout, 5.0) * 1000))}ms"}
    # Passing client options replaces the ones obstore would read from the environment.
    allow_http = os.environ.get(_ENV_PREFIX[url.scheme] + "ALLOW_HTTP")
    if allow_http is not None:
        options["allow_http"] = allow_http.strip().lower() in ("1", "true", "yes", "on")
    retry = {"max_retries": retries, "retry_timeout": timedelta(seconds=timeout),
             "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(seconds=1), "base": 2}}
    return from_url(str(url), client_options=options, retry_config=retry)  # type: ignore[call-overload]


def is_missing(e: BaseException) -> bool:
    """The object (or the bucket) is not there."""
    from obstore.exceptions import NotFoundError

    return isinstance(e, (FileNotFoundError, NotFoundError))


def is_refused(e: BaseException) -> bool:
    """The store answered and refused: bad credentials or no permission (401, 403)."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    if isinstance(e, (PermissionDeniedError, UnauthenticatedError)):
        return True
    return re.search(r"status code: 40[13]\b", str(e)) is not None


def describe(e: BaseException) -> str:
    """One short line for a log or a response: the store's error code, or the kind of failure."""
    text = str(e)
    code = re.search(r"<Code>([A-Za-z0-9.]+)</Code>", text)
    if is_refused(e):
        return f"access denied ({code.group(1) if code else 'forbidden'}): check the credentials and their permissions"
    if code:
        return code.group(1)
    if re.search(r"timed? ?out|deadline", text, re.I):
        return "timed out"
    if re.search(r"connect|refused|reset|broken pipe|dns", text, re.I):
        return "unreachable"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return first[:160]


def probe(url: BucketURL, timeout: float = 5.0) -> str | None:
    """Start-up check: why this bucket cannot be used (refused, no such bucket, bad config), or None.

    Lists at most one key under the prefix (needs ``s3:ListBucket`` on it, which also turns a
    missing object into a 404 instead of a 403). A store that does not answer is not an error
    here: it may come up later, and requests report it meanwhile.
    """
    import obstore

    try:
        store = connect(url, timeout)
        next(iter(obstore.list(store, chunk_size=1)), None)
    except Exception as e:  # noqa: BLE001 - every kind of failure is sorted below
        if is_refused(e):
            return describe(e)
        text = str(e)
        if "NoSuchBucket" in text or "ContainerNotFound" in text:
            return "no such bucket"
        if is_missing(e):
            return None
        if re.search(r"builder error|configuration|missing|invalid", text, re.I) and "status code" not in text:
            return describe(e)
        return None
    return None
