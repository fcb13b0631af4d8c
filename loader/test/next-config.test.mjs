// The loader's Next.js behaviours: `dpl` handled as Next's default loader does, SVGs not sent
// to the service unless dangerouslyAllowSVG, and the settings Next compiles into the build
// (process.env.__NEXT_IMAGE_OPTS, NEXT_DEPLOYMENT_ID) read instead of repeated in env vars.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createLoader } from '../index.js'

const media = '/_next/static/media/hero.3-8si98032mvl.jpg'

test('a dpl query parameter of a local src becomes the loader\'s own &dpl= parameter', () => {
  const loader = createLoader()
  assert.equal(
    loader({ src: `${media}?dpl=v1`, width: 640 }),
    `/_next/image?url=${encodeURIComponent(media)}&w=640&q=75&dpl=v1`
  )
  // Other parameters stay in the src; only dpl moves.
  assert.equal(
    loader({ src: '/a.png?v=2&dpl=v1', width: 640 }),
    `/_next/image?url=${encodeURIComponent('/a.png?v=2')}&w=640&q=75&dpl=v1`
  )
})

test('the deployment id is added to local srcs, never to remote ones', () => {
  const loader = createLoader({ deploymentId: 'v7' })
  assert.equal(loader({ src: '/img/a.jpg', width: 32 }), '/_next/image?url=%2Fimg%2Fa.jpg&w=32&q=75&dpl=v7')
  assert.equal(loader({ src: `${media}?dpl=v1`, width: 32 }), `/_next/image?url=${encodeURIComponent(media)}&w=32&q=75&dpl=v1`)
  assert.equal(
    loader({ src: 'https://cdn.example.com/a.jpg?dpl=x', width: 32 }),
    `/_next/image?url=${encodeURIComponent('https://cdn.example.com/a.jpg?dpl=x')}&w=32&q=75`
  )
})

test('immutable assets get no dpl when the platform supports immutable assets', () => {
  const src = '/_next/static/immutable/a.jpg'
  assert.match(createLoader({ deploymentId: 'v1' })({ src, width: 32 }), /&dpl=v1$/)
  assert.doesNotMatch(createLoader({ deploymentId: 'v1', supportsImmutableAssets: true })({ src, width: 32 }), /dpl/)
})

test('SVGs are returned as they are unless dangerouslyAllowSVG, as Next\'s default loader does', () => {
  const loader = createLoader({ deploymentId: 'v1' })
  assert.equal(loader({ src: '/logo.svg', width: 640 }), '/logo.svg?dpl=v1')
  assert.equal(loader({ src: '/logo.svg?x=1', width: 640 }), '/logo.svg?x=1&dpl=v1')
  assert.equal(loader({ src: '/logo.svg?dpl=v2', width: 640 }), '/logo.svg?dpl=v2')
  assert.equal(loader({ src: 'https://cdn.example.com/logo.svg', width: 640 }), 'https://cdn.example.com/logo.svg')
  assert.equal(createLoader()({ src: '/logo.svg', width: 640 }), '/logo.svg')
  // Next's check is case-sensitive: /LOGO.SVG goes to the optimizer (which refuses SVG).
  assert.equal(createLoader()({ src: '/LOGO.SVG', width: 640 }), '/_next/image?url=%2FLOGO.SVG&w=640&q=75')
  assert.equal(
    createLoader({ dangerouslyAllowSVG: true })({ src: '/logo.svg', width: 640 }),
    '/_next/image?url=%2Flogo.svg&w=640&q=75'
  )
})

test('a qualities array is used in its own order, as images.qualities is in Next', () => {
  // 60 is as close to 50 as to 70: the first entry of the list wins.
  assert.match(createLoader({ qualities: [70, 50] })({ src: '/a.png', width: 32, quality: 60 }), /&q=70$/)
  assert.match(createLoader({ qualities: [50, 70] })({ src: '/a.png', width: 32, quality: 60 }), /&q=50$/)
  assert.match(createLoader({ qualities: '70,50' })({ src: '/a.png', width: 32, quality: 60 }), /&q=50$/)
})

test('path (images.path, basePath included) and an absolute path', () => {
  // Next adds a trailing slash to images.path for custom loaders.
  assert.equal(createLoader({ path: '/_next/image/' })({ src: '/a.png', width: 32 }), '/_next/image?url=%2Fa.png&w=32&q=75')
  assert.equal(createLoader({ path: '/shop/_next/image' })({ src: '/shop/a.png', width: 32 }), '/shop/_next/image?url=%2Fshop%2Fa.png&w=32&q=75')
  assert.equal(
    createLoader({ baseUrl: 'http://127.0.0.1:3001', path: '/shop/_next/image' })({ src: '/a.png', width: 32 }),
    'http://127.0.0.1:3001/shop/_next/image?url=%2Fa.png&w=32&q=75'
  )
  assert.equal(
    createLoader({ baseUrl: 'http://ignored.invalid', path: 'https://img.example.com/_next/image/' })({ src: '/a.png', width: 32 }),
    'https://img.example.com/_next/image?url=%2Fa.png&w=32&q=75'
  )
})

// The default export reads what Next compiles in. Each case runs in a fresh process, since
// a bundler replaces these expressions once, at build time.
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const INDEX = fileURLToPath(new URL('../index.js', import.meta.url))

function defaultLoaderUrl(env, props) {
  const script = `import l from ${JSON.stringify(INDEX)}; process.stdout.write(l(${JSON.stringify(props)}))`
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('NEXT_') && !k.startsWith('__NEXT'))
  )
  return execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...clean, ...env } }).toString()
}

test('the default export takes qualities, path and dangerouslyAllowSVG from Next\'s compiled images config', () => {
  const opts = JSON.stringify({ qualities: [50, 75], path: '/shop/_next/image', dangerouslyAllowSVG: false })
  assert.equal(
    defaultLoaderUrl({ __NEXT_IMAGE_OPTS: opts, NEXT_PUBLIC_IMGOPT_QUALITIES: '90' }, { src: '/shop/a.jpg', width: 640, quality: 50 }),
    '/shop/_next/image?url=%2Fshop%2Fa.jpg&w=640&q=50'
  )
  assert.equal(defaultLoaderUrl({ __NEXT_IMAGE_OPTS: opts }, { src: '/shop/a.svg', width: 640 }), '/shop/a.svg')
  assert.equal(
    defaultLoaderUrl({ __NEXT_IMAGE_OPTS: opts, NEXT_PUBLIC_IMGOPT_URL: 'http://127.0.0.1:3001/' }, { src: '/shop/a.jpg', width: 32 }),
    'http://127.0.0.1:3001/shop/_next/image?url=%2Fshop%2Fa.jpg&w=32&q=75'
  )
  assert.equal(
    defaultLoaderUrl({ __NEXT_IMAGE_OPTS: opts, NEXT_DEPLOYMENT_ID: 'v1' }, { src: `${media}?dpl=v1`, width: 32 }),
    `/shop/_next/image?url=${encodeURIComponent(media)}&w=32&q=75&dpl=v1`
  )
})

test('without Next\'s config the environment variables still apply', () => {
  assert.equal(
    defaultLoaderUrl({ NEXT_PUBLIC_IMGOPT_QUALITIES: '50,90' }, { src: '/a.jpg', width: 32, quality: 85 }),
    '/_next/image?url=%2Fa.jpg&w=32&q=90'
  )
})
