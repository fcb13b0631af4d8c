// GENERATED from index.js by scripts/build-cjs.mjs. Do not edit.
'use strict'

// @imgopt/next-loader: a next/image custom loader for the imgopt service.
// index.js is the single source. index.cjs is generated from it by
// `npm run build` (scripts/build-cjs.mjs) and a test checks it is up to date.
// No dependencies; pure and deterministic (same output on server and browser).

const DEFAULT_PATH = '/_next/image'
const DEFAULT_QUALITY = 75
const DEFAULT_QUALITIES = [DEFAULT_QUALITY] // Next 16 default `images.qualities`

// Next.js replaces `process.env.NEXT_PUBLIC_*` textually at build time, so these
// two expressions must stay spelled exactly like this. try/catch (not a
// `typeof process` guard) so that the inlined literal is always used, and a
// browser without `process` just gets undefined.
function readEnvBaseUrl() {
  try {
    return process.env.NEXT_PUBLIC_IMGOPT_URL
  } catch {
    return undefined
  }
}

function readEnvQualities() {
  try {
    return process.env.NEXT_PUBLIC_IMGOPT_QUALITIES
  } catch {
    return undefined
  }
}

// The site's `images` settings as Next.js compiles them into every bundle (server and
// browser, Turbopack and webpack): `process.env.__NEXT_IMAGE_OPTS` is replaced at build
// time by {deviceSizes, imageSizes, qualities, path, loader, dangerouslyAllowSVG,
// unoptimized}. next/image itself strips `config` from what it passes to a custom loader,
// so this is the one way to read images.qualities, images.path (which already includes
// basePath) and images.dangerouslyAllowSVG without repeating them. Outside a Next build
// (plain Node, tests) it is undefined and the NEXT_PUBLIC_IMGOPT_* variables apply.
function readNextImageConfig() {
  try {
    const c = process.env.__NEXT_IMAGE_OPTS
    if (c && typeof c === 'object') return c
    if (typeof c === 'string' && c.startsWith('{')) return JSON.parse(c)
  } catch {}
  return undefined
}

// Next's deployment id (next.config `deploymentId`), compiled in as Next's own default
// loader reads it: a literal under webpack, `globalThis.NEXT_DEPLOYMENT_ID` in Turbopack's
// browser bundles, `false` or undefined when none is set.
function readDeploymentId() {
  try {
    const id = process.env.NEXT_DEPLOYMENT_ID
    return typeof id === 'string' && id !== '' ? id : undefined
  } catch {
    return undefined
  }
}

// Immutable static assets need no `dpl` unless the platform has an asset token (Next's
// getAssetToken): false when Next says the platform supports immutable assets.
function readSupportsImmutableAssets() {
  try {
    return Boolean(process.env.NEXT_SUPPORTS_IMMUTABLE_ASSETS)
  } catch {
    return false
  }
}

function fail(message) {
  return new Error(`@imgopt/next-loader: ${message}`)
}

// Accepts an array or a comma-separated string. Keeps integers 1..100, drops
// anything else (junk, decimals, out of range), removes duplicates, sorts
// ascending (as next/image does). Returns [75] when nothing valid is left.
function parseQualities(input) {
  const items = Array.isArray(input)
    ? input
    : typeof input === 'string'
      ? input.split(',')
      : typeof input === 'number'
        ? [input]
        : []
  const out = []
  for (const item of items) {
    const s = typeof item === 'number' ? String(item) : typeof item === 'string' ? item.trim() : ''
    if (!/^[0-9]+$/.test(s)) continue
    const n = parseInt(s, 10)
    if (n >= 1 && n <= 100 && !out.includes(n)) out.push(n)
  }
  out.sort((a, b) => a - b)
  return out.length ? out : DEFAULT_QUALITIES.slice()
}

// Same rule as Next's findClosestQuality: quality || 75, then the entry of
// `qualities` closest to it; the reduce starts at qualities[0] and only a
// strictly closer entry wins, so ties go to the earlier (with a sorted list:
// the lower) value. Without a list the quality is returned, rounded and
// clamped to 1..100.
function findClosestQuality(quality, qualities) {
  const n = Number(quality)
  const q = Number.isFinite(n) && n !== 0 ? n : DEFAULT_QUALITY
  if (!Array.isArray(qualities) || qualities.length === 0) {
    return Math.min(100, Math.max(1, Math.round(q)))
  }
  return qualities.reduce(
    (prev, cur) => (Math.abs(cur - q) < Math.abs(prev - q) ? cur : prev),
    qualities[0]
  )
}

function normalizeBaseUrl(baseUrl) {
  if (baseUrl === undefined || baseUrl === null) return ''
  const base = String(baseUrl).trim().replace(/\/+$/, '')
  if (base !== '' && !/^(https?:)?\/\//i.test(base) && !base.startsWith('/')) {
    throw fail(`base URL "${baseUrl}" must start with http://, https:// or /`)
  }
  return base
}

// Next appends a slash to images.path for every non-default loader ('/_next/image/'); the
// optimizer's route is the path without it (imgopt, like Next, redirects the slashed one).
function normalizePath(path) {
  const p = String(path).trim().replace(/\/+$/, '')
  return p.startsWith('/') ? p : `/${p}`
}

function normalizeSrc(src) {
  if (typeof src !== 'string') {
    throw fail(`src must be a string, got ${src === null ? 'null' : typeof src}`)
  }
  if (/^[\\/]{2}/.test(src)) {
    throw fail(
      `protocol-relative src "${src}" is not supported; use an absolute URL (https://...) or a path starting with a single /`
    )
  }
  if (src.startsWith('/') || /^https?:\/\//i.test(src)) return src
  if (/^[a-z][a-z0-9+.-]*:/i.test(src)) {
    throw fail(`src "${src}" has an unsupported scheme; only http(s) URLs and local paths are optimized`)
  }
  // A bare relative path such as "img.png" is treated as "/img.png".
  return `/${src}`
}

// Next's default loader moves a `dpl` query parameter of a local src into its own `&dpl=`
// parameter and adds the deployment id when the src has none (Turbopack writes static
// imports as `/_next/static/media/a.hash.jpg?dpl=ID`). Returns [src without dpl, dpl].
function splitDeploymentId(src, deploymentId, supportsImmutableAssets) {
  if (!src.startsWith('/') || src.startsWith('//')) return [src, undefined]
  if (src.includes('/_next/static/immutable') && supportsImmutableAssets) return [src, undefined]
  let dpl = deploymentId
  const qIndex = src.indexOf('?')
  if (qIndex !== -1) {
    const params = new URLSearchParams(src.slice(qIndex + 1))
    const srcDpl = params.get('dpl')
    if (srcDpl) {
      dpl = srcDpl
      params.delete('dpl')
      const remaining = params.toString()
      src = src.slice(0, qIndex) + (remaining ? '?' + remaining : '')
    }
  }
  return [src, dpl]
}

// What Next does for an image it does not optimize (an SVG under its default loader): the
// src itself, with `?dpl=` added to a local src when a deployment id is set.
function unoptimizedSrc(src, deploymentId, supportsImmutableAssets) {
  if (!deploymentId || !src.startsWith('/') || src.startsWith('//')) return src
  if (src.includes('/_next/static/immutable') && supportsImmutableAssets) return src
  const qIndex = src.indexOf('?')
  if (qIndex === -1) return `${src}?dpl=${deploymentId}`
  const params = new URLSearchParams(src.slice(qIndex + 1))
  if (params.get('dpl')) return src
  params.append('dpl', deploymentId)
  return src.slice(0, qIndex) + '?' + params.toString()
}

// Keeps a qualities list as Next's findClosestQuality sees it (in the given order, so ties
// break as in Next), dropping entries that are not integers 1..100.
function configQualities(list) {
  if (!Array.isArray(list)) return undefined
  const out = list.filter((n) => Number.isSafeInteger(n) && n >= 1 && n <= 100)
  return out.length ? out : undefined
}

// Returns a next/image loader bound to explicit settings.
//   baseUrl:   origin (and optional path prefix) of the imgopt service; '' or
//              undefined means same-origin.
//   qualities: allowed qualities (array or comma-separated string), default [75].
//   path:      route on the service, default '/_next/image' (with basePath: '/base/_next/image');
//              an absolute http(s) URL is used as the whole endpoint.
//   dangerouslyAllowSVG: when false (the default), `.svg` srcs are not sent to the service;
//              the loader returns the src itself, as Next's default loader does.
//   deploymentId: Next's `deploymentId`; sent as `&dpl=` for local srcs, as Next does.
function createLoader({
  baseUrl,
  qualities,
  path = DEFAULT_PATH,
  dangerouslyAllowSVG = false,
  deploymentId,
  supportsImmutableAssets = false,
} = {}) {
  const endpoint = /^https?:\/\//i.test(String(path).trim())
    ? String(path).trim().replace(/\/+$/, '')
    : normalizeBaseUrl(baseUrl) + normalizePath(path)
  // A list of numbers is used as Next uses images.qualities (its order breaks ties); a string
  // (the environment variable) is parsed and sorted.
  const allowed =
    Array.isArray(qualities) && qualities.every((n) => typeof n === 'number') && configQualities(qualities)
      ? configQualities(qualities)
      : parseQualities(qualities === undefined ? DEFAULT_QUALITIES : qualities)
  const dplId = typeof deploymentId === 'string' && deploymentId !== '' ? deploymentId : undefined

  return function imgoptLoader({ src, width, quality } = {}) {
    // Next never calls a loader for these, but pass them through to be safe.
    if (src === '' || (typeof src === 'string' && /^(data|blob):/i.test(src))) return src
    let url = normalizeSrc(src)
    if (typeof width !== 'number' || !Number.isSafeInteger(width) || width <= 0) {
      const got = typeof width === 'string' ? JSON.stringify(width) : String(width)
      throw fail(`width must be a positive integer, got ${got} for src "${src}"`)
    }
    if (!dangerouslyAllowSVG && url.split('?', 1)[0].endsWith('.svg')) {
      return unoptimizedSrc(url, dplId, supportsImmutableAssets)
    }
    let dpl
    ;[url, dpl] = splitDeploymentId(url, dplId, supportsImmutableAssets)
    const q = findClosestQuality(quality, allowed)
    let encoded
    try {
      encoded = encodeURIComponent(url)
    } catch {
      throw fail(`src "${src}" is not valid Unicode (lone surrogate)`)
    }
    return `${endpoint}?url=${encoded}&w=${width}&q=${q}${dpl ? `&dpl=${encodeURIComponent(dpl)}` : ''}`
  }
}

// Default export: the settings of the Next.js build it is compiled into (images.qualities,
// images.path with basePath, images.dangerouslyAllowSVG, deploymentId), and
// NEXT_PUBLIC_IMGOPT_URL for the service's origin. NEXT_PUBLIC_IMGOPT_QUALITIES is read only
// where Next's settings are not available. Read on each call (after Next's build-time
// inlining they are constants); the built loader is cached.
let cachedKey
let cachedLoader

function imgoptLoader(params) {
  const config = readNextImageConfig()
  const baseUrl = readEnvBaseUrl()
  const qualities = configQualities(config?.qualities) ?? readEnvQualities()
  const path = typeof config?.path === 'string' && config.path !== '' ? config.path : DEFAULT_PATH
  const dangerouslyAllowSVG = Boolean(config?.dangerouslyAllowSVG)
  const deploymentId = readDeploymentId()
  const supportsImmutableAssets = readSupportsImmutableAssets()
  const key = JSON.stringify([baseUrl, qualities, path, dangerouslyAllowSVG, deploymentId, supportsImmutableAssets])
  if (cachedLoader === undefined || key !== cachedKey) {
    cachedLoader = createLoader({ baseUrl, qualities, path, dangerouslyAllowSVG, deploymentId, supportsImmutableAssets })
    cachedKey = key
  }
  return cachedLoader(params)
}

// Build-time helper for blur-up placeholders (an imgopt extension, not part of next/image):
// fetches {thumbhash, blurDataURL, width, height, dominantColor} for `src` from the
// service's /_next/image/placeholder endpoint. Meant for static generation and static
// exports, in Node 18+ (global fetch), e.g.
//   const { blurDataURL } = await getPlaceholder('/photo.jpg', { baseUrl: 'http://127.0.0.1:3001' })
//   <Image src="/photo.jpg" placeholder="blur" blurDataURL={blurDataURL} ... />
// baseUrl defaults to NEXT_PUBLIC_IMGOPT_URL and must be absolute here.
async function getPlaceholder(src, { baseUrl, path = DEFAULT_PATH, fetch: fetchImpl, signal } = {}) {
  const base = normalizeBaseUrl(baseUrl === undefined ? readEnvBaseUrl() : baseUrl)
  if (!/^https?:\/\//i.test(base)) {
    throw fail(`getPlaceholder needs an absolute baseUrl (http:// or https://), got "${base}"`)
  }
  if (typeof src === 'string' && /^(data|blob):/i.test(src)) {
    throw fail(`getPlaceholder cannot make a placeholder for a ${src.slice(0, 5)} URL`)
  }
  const url = normalizeSrc(src)
  let encoded
  try {
    encoded = encodeURIComponent(url)
  } catch {
    throw fail(`src "${src}" is not valid Unicode (lone surrogate)`)
  }
  const endpoint = `${base}${normalizePath(path).replace(/\/+$/, '')}/placeholder?url=${encoded}`
  const doFetch = fetchImpl ?? globalThis.fetch
  if (typeof doFetch !== 'function') throw fail('getPlaceholder needs fetch() (Node 18 or later)')
  const res = await doFetch(endpoint, { headers: { accept: 'application/json' }, signal })
  if (!res.ok) {
    let text = ''
    try {
      text = (await res.text()).slice(0, 200)
    } catch {}
    throw fail(`placeholder for "${src}" failed: HTTP ${res.status}${text ? ` ${text}` : ''}`)
  }
  const data = await res.json()
  const ok =
    data !== null &&
    typeof data === 'object' &&
    typeof data.thumbhash === 'string' &&
    typeof data.blurDataURL === 'string' &&
    data.blurDataURL.startsWith('data:image/') &&
    Number.isSafeInteger(data.width) &&
    Number.isSafeInteger(data.height) &&
    typeof data.dominantColor === 'string'
  if (!ok) throw fail(`placeholder for "${src}": unexpected response from ${endpoint}`)
  return {
    thumbhash: data.thumbhash,
    blurDataURL: data.blurDataURL,
    width: data.width,
    height: data.height,
    dominantColor: data.dominantColor,
  }
}

module.exports = imgoptLoader
Object.defineProperty(module.exports, '__esModule', { value: true })
module.exports.default = imgoptLoader
module.exports.createLoader = createLoader
module.exports.findClosestQuality = findClosestQuality
module.exports.parseQualities = parseQualities
module.exports.getPlaceholder = getPlaceholder
