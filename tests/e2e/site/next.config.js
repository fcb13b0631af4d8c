// The e2e test site (tests/test_e2e_browser.py). One config, two set-ups, chosen at build time:
//
//   IMGOPT_E2E_MODE=export   `output: 'export'` + the imgopt loader (loader/index.js); the
//                            static files go to out/, images to NEXT_PUBLIC_IMGOPT_URL.
//   IMGOPT_E2E_MODE=dropin   `next start` with Next's default loader; a proxy in front sends
//                            /_next/image to imgopt instead of Next.
//
//   IMGOPT_E2E_REMOTE_ORIGIN http://127.0.0.1:PORT, the origin of the remote image; it is
//                            allowed by remotePatterns (and read by the gallery page).
//
// imgopt reads this same file (`imgopt serve --next-config tests/e2e/site/next.config.js`), so
// the site and the service share one `images` section.
const path = require('node:path')

const mode = process.env.IMGOPT_E2E_MODE || 'dropin'
if (mode !== 'export' && mode !== 'dropin') {
  throw new Error(`IMGOPT_E2E_MODE must be "export" or "dropin", got "${mode}"`)
}
const remoteOrigin = process.env.IMGOPT_E2E_REMOTE_ORIGIN || 'http://127.0.0.1:4000'
// The repository root: the loader lives outside this project, so Turbopack's root must include it.
const repoRoot = path.join(__dirname, '..', '..', '..')

const images = {
  formats: ['image/avif', 'image/webp'],
  remotePatterns: [new URL(`${remoteOrigin}/**`)],
  // The remote origin of the test runs on 127.0.0.1. Do not copy this into a real site.
  dangerouslyAllowLocalIP: true,
}

/** @type {import('next').NextConfig} */
const nextConfig = {
  // Separate build folders, so both set-ups can be built side by side: an export build
  // always compiles into .next and writes the site to out/, so drop-in builds elsewhere.
  ...(mode === 'dropin' ? { distDir: '.next-dropin' } : {}),
  turbopack: { root: repoRoot },
  outputFileTracingRoot: repoRoot,
  images:
    mode === 'export'
      ? { ...images, loader: 'custom', loaderFile: '../../../loader/index.js' }
      : images,
  ...(mode === 'export' ? { output: 'export' } : {}),
  env: { IMGOPT_E2E_REMOTE_ORIGIN: remoteOrigin },
}

module.exports = nextConfig
