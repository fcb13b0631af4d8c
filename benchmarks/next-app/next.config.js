// Minimal Next.js app used only for its built-in image optimizer (/_next/image), side by side with
// imgopt (benchmarks/compare_next.sh). benchmarks/setup_peers.sh copies it into the bench cache,
// runs `npm ci` and `next build`. ORIGIN_PORT (read at `next start`) must match the origin server.
const ORIGIN_PORT = process.env.ORIGIN_PORT || '8700';

/** @type {import('next').NextConfig} */
module.exports = {
  images: {
    remotePatterns: [
      { protocol: 'http', hostname: '127.0.0.1', port: ORIGIN_PORT, pathname: '/**' },
    ],
    formats: ['image/avif', 'image/webp'],
    // Next 16 defaults qualities to [75] and rejects other q values with HTTP 400.
    // The benchmark uses 74 / 76 (cold passes, cache busting) and 75 (warm); the rest are spare.
    qualities: [50, 60, 70, 72, 73, 74, 75, 76, 77, 78, 80, 85, 90],
    // Next 16 refuses upstreams that resolve to private/loopback IPs unless this is set.
    dangerouslyAllowLocalIP: true,
    // dangerouslyAllowSVG stays false (default): SVG requests get HTTP 400, reported as errors.
  },
};
