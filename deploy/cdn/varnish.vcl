# Varnish in front of imgopt: one cached object per output format, not one per browser.
#
# imgopt answers /_next/image with `Vary: Accept` and picks AVIF, WebP or the original type from
# the request's Accept header. Browsers send many different Accept strings for the same
# choice, so raw Vary stores several byte-identical copies. This VCL rewrites Accept to the
# only tokens imgopt looks at before the lookup; Varnish then varies on the rewritten header,
# and imgopt negotiates on it (with the site's own images.formats).
#
# Tested as it is written by tests/test_cdn.py (only the backend's port changes there).
vcl 4.1;

backend imgopt {
    .host = "127.0.0.1";     # imgopt, or the load balancer in front of its replicas
    .port = "3001";
    .first_byte_timeout = 30s;
}

sub vcl_recv {
    # The image route, with or without a basePath.
    if (req.url ~ "^(/[^?]*)?/_next/image(/|\?|$)") {
        # AVIF and WebP (every browser that takes AVIF), AVIF alone, WebP alone, or neither.
        # A client that names AVIF but not WebP is kept apart: with --fast-first the first
        # answer under "image/avif,image/webp" can be a WebP.
        if (req.http.Accept ~ "(?i)image/avif" && req.http.Accept ~ "(?i)image/webp") {
            set req.http.Accept = "image/avif,image/webp";
        } elsif (req.http.Accept ~ "(?i)image/avif") {
            set req.http.Accept = "image/avif";
        } elsif (req.http.Accept ~ "(?i)image/webp") {
            set req.http.Accept = "image/webp";
        } else {
            unset req.http.Accept;              # the original format
        }
        # A request id names one request. Keep the client's for this request (it is put back
        # in vcl_deliver) but never send it to imgopt, which would store it with the object.
        unset req.http.X-Client-Request-Id;
        if (req.http.X-Request-Id) {
            set req.http.X-Client-Request-Id = req.http.X-Request-Id;
            unset req.http.X-Request-Id;
        }
        unset req.http.Cookie;
        unset req.http.Authorization;
        return (hash);
    }
    # Nothing else is cached (/healthz, /metrics: keep /metrics private, see docs/cdn.md).
    return (pass);
}

sub vcl_backend_response {
    if (bereq.url ~ "^(/[^?]*)?/_next/image(/|\?|$)") {
        # Errors are never cached (imgopt also sends no-store on them): a file that appears
        # later, or an origin that recovers, is seen at once.
        if (beresp.status >= 400) {
            set beresp.uncacheable = true;
            set beresp.ttl = 0s;
            return (deliver);
        }
        unset beresp.http.X-Request-Id;
        # Keep expired objects a while so Varnish can revalidate them with If-None-Match
        # (imgopt answers 304 when the ETag still matches) instead of fetching them whole.
        set beresp.keep = 1d;
    }
}

sub vcl_deliver {
    # Each client gets its own request id: the one it sent, or Varnish's transaction id.
    if (req.http.X-Client-Request-Id) {
        set resp.http.X-Request-Id = req.http.X-Client-Request-Id;
    } else {
        set resp.http.X-Request-Id = req.xid;
    }
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
