// The Next.js app that tests/test_next_parity.py builds and starts with `next start`, so the
// same requests can go to Next.js's own /_next/image and to imgopt, and the answers be compared.
// imgopt reads this same file (`--next-config`), so both sides always have one `images` object.
//
//   PARITY_PROFILE=D   Next 16's defaults (the spec's profile D)
//   PARITY_PROFILE=C   the spec's profile C ("with next.config.js" in Next's own tests)
//   PARITY_PROFILE=S   every other option set: SVG allowed, inline, own CSP, formats in the other
//                      order, localPatterns, remotePatterns (an object and a URL) on
//                      PARITY_REMOTE_ORIGIN, no redirects, a 30 kB body limit, TTL 600
//   PARITY_PROFILE=B   Next 16's defaults under basePath /docs
//   PARITY_PROFILE=A   assetPrefix on another host (PARITY_REMOTE_ORIGIN/cdn), no remotePatterns:
//                      Next allows the prefix's host, protocol and port for static imports
const profile = process.env.PARITY_PROFILE || 'D'
if (!['D', 'C', 'S', 'B', 'A'].includes(profile)) throw new Error(`PARITY_PROFILE must be D, C, S, B or A, got "${profile}"`)
const origin = new URL(process.env.PARITY_REMOTE_ORIGIN || 'http://127.0.0.1:4000')

const profiles = {
  D: {},
  B: {},
  A: { dangerouslyAllowLocalIP: true }, // the remote origin of the test runs on 127.0.0.1
  C: {
    dangerouslyAllowLocalIP: true, // the remote origin of the test runs on 127.0.0.1
    domains: ['localhost', '127.0.0.1', 'example.com'],
    formats: ['image/avif', 'image/webp'],
    deviceSizes: [399, 1080],
    qualities: [50, 75, 100],
  },
  S: {
    dangerouslyAllowSVG: true,
    contentDispositionType: 'inline',
    contentSecurityPolicy: "default-src 'self'; script-src 'none'; sandbox;",
    formats: ['image/webp', 'image/avif'],
    localPatterns: [{ pathname: '/img/**', search: '' }, { pathname: '/test.*' }],
    remotePatterns: [
      { protocol: 'http', hostname: origin.hostname, port: origin.port, pathname: '/ok/**' },
      new URL(`${origin.origin}/url/**`),
    ],
    dangerouslyAllowLocalIP: true,
    maximumRedirects: 0,
    maximumResponseBody: 30000,
    minimumCacheTTL: 600, // long enough that no entry expires during the run
    deviceSizes: [100, 200],
    imageSizes: [10],
    qualities: [10, 90],
  },
}

/** @type {import('next').NextConfig} */
module.exports = {
  distDir: `.next-${profile}`,
  ...(profile === 'B' ? { basePath: '/docs' } : {}),
  ...(profile === 'A' ? { assetPrefix: `${origin.origin}/cdn` } : {}),
  images: profiles[profile],
  // An upstream max-age above minimumCacheTTL (spec 6.5 case 77).
  async headers() {
    return [{ source: '/max-age.png', headers: [{ key: 'cache-control', value: 'public, max-age=86400, must-revalidate' }] }]
  },
}
