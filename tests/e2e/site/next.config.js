// The e2e test site (tests/test_e2e_browser.py). One config, every deployment shape, chosen at
// build time by environment variables:
//
//   IMGOPT_E2E_MODE=export   `output: 'export'` + the imgopt loader (loader/index.js); the
//                            static files go to out/, images to NEXT_PUBLIC_IMGOPT_URL.
//   IMGOPT_E2E_MODE=loader   `next start` with the imgopt loader: images to NEXT_PUBLIC_IMGOPT_URL.
//   IMGOPT_E2E_MODE=dropin   `next start` with Next's default loader; a proxy in front sends
//                            {basePath}/_next/image to imgopt instead of Next.
//   IMGOPT_E2E_MODE=standalone  the same with `output: 'standalone'` (`node server.js`).
//   IMGOPT_E2E_MODE=path     `next start` with Next's default loader pointed at imgopt by
//                            images.path = IMGOPT_E2E_IMAGES_PATH (imgopt's URL); no proxy.
//   IMGOPT_E2E_BASE_PATH     '' (default) or a basePath such as '/shop'.
//   IMGOPT_E2E_DIST          the build folder (default .next), so that shapes can be built
//                            one after another without overwriting each other.
//   IMGOPT_E2E_REMOTE_ORIGIN http://127.0.0.1:PORT, the origin of the remote image; it is
//                            allowed by remotePatterns.
//
// The bundler is chosen on the command line: `next build` (Turbopack) or `next build --webpack`.
// deploymentId is always set, as the Next.js self-hosting guide recommends for every
// deployment with more than one server.
//
// imgopt reads this same file (`imgopt serve --next-config tests/e2e/site/next.config.js`), so
// the site and the service share one `images` section.
const path = require('node:path')

const mode = process.env.IMGOPT_E2E_MODE || 'dropin'
if (!['export', 'loader', 'dropin', 'standalone', 'path'].includes(mode)) {
  throw new Error(`IMGOPT_E2E_MODE must be "export", "loader", "dropin", "standalone" or "path", got "${mode}"`)
}
const imagesPath = process.env.IMGOPT_E2E_IMAGES_PATH
if (mode === 'path' && !imagesPath) {
  throw new Error('IMGOPT_E2E_MODE=path needs IMGOPT_E2E_IMAGES_PATH (imgopt\'s URL)')
}
const basePath = process.env.IMGOPT_E2E_BASE_PATH || ''
const remoteOrigin = process.env.IMGOPT_E2E_REMOTE_ORIGIN || 'http://127.0.0.1:4000'
// The repository root: the loader lives outside this project, so Turbopack's root must include it.
const repoRoot = path.join(__dirname, '..', '..', '..')

const images = {
  formats: ['image/avif', 'image/webp'],
  qualities: [50, 75],
  remotePatterns: [new URL(`${remoteOrigin}/**`)],
  // The remote origin of the test runs on 127.0.0.1. Do not copy this into a real site.
  dangerouslyAllowLocalIP: true,
}

/** @type {import('next').NextConfig} */
const nextConfig = {
  deploymentId: process.env.IMGOPT_E2E_DEPLOYMENT_ID || 'e2e-v1',
  ...(basePath ? { basePath } : {}),
  distDir: process.env.IMGOPT_E2E_DIST || '.next',
  turbopack: { root: repoRoot },
  outputFileTracingRoot: repoRoot,
  images:
    mode === 'export' || mode === 'loader'
      ? { ...images, loader: 'custom', loaderFile: '../../../loader/index.js' }
      : mode === 'path'
        ? { ...images, path: imagesPath }
        : images,
  ...(mode === 'export' ? { output: 'export' } : mode === 'standalone' ? { output: 'standalone' } : {}),
  env: { IMGOPT_E2E_REMOTE_ORIGIN: remoteOrigin, IMGOPT_E2E_BASE_PATH: basePath },
}

module.exports = nextConfig
