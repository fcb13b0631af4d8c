import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import imgoptLoader, { createLoader } from '../index.js'

const loader = createLoader()

// Decode the way the service does (standard query-string decoding).
function decode(url) {
  const u = new URL(url, 'http://service.invalid')
  return { path: u.pathname, keys: [...u.searchParams.keys()], ...Object.fromEntries(u.searchParams) }
}

const encodingTable = [
  ['/test.png', '/_next/image?url=%2Ftest.png&w=640&q=75'],
  ['/dir with space/a b.png', '/_next/image?url=%2Fdir%20with%20space%2Fa%20b.png&w=640&q=75'],
  ['/äöü.png', '/_next/image?url=%2F%C3%A4%C3%B6%C3%BC.png&w=640&q=75'],
  ['/a.png?v=1', '/_next/image?url=%2Fa.png%3Fv%3D1&w=640&q=75'],
  ['/a#b.png', '/_next/image?url=%2Fa%23b.png&w=640&q=75'],
  ['/100%.png', '/_next/image?url=%2F100%25.png&w=640&q=75'],
  ['/a+b.png', '/_next/image?url=%2Fa%2Bb.png&w=640&q=75'],
  ['/a&w=1&q=2.png', '/_next/image?url=%2Fa%26w%3D1%26q%3D2.png&w=640&q=75'],
  ['/already%20encoded.png', '/_next/image?url=%2Falready%2520encoded.png&w=640&q=75'],
  ['/_next/static/media/test.fab2915d.jpg', '/_next/image?url=%2F_next%2Fstatic%2Fmedia%2Ftest.fab2915d.jpg&w=640&q=75'],
  [
    'https://cdn.example.com/p/ä b.jpg?x=1&y=a+b#frag',
    '/_next/image?url=https%3A%2F%2Fcdn.example.com%2Fp%2F%C3%A4%20b.jpg%3Fx%3D1%26y%3Da%2Bb%23frag&w=640&q=75',
  ],
  ['http://example.com/a.png', '/_next/image?url=http%3A%2F%2Fexample.com%2Fa.png&w=640&q=75'],
]

for (const [src, expected] of encodingTable) {
  test(`encodes ${JSON.stringify(src)} and it round-trips`, () => {
    const url = loader({ src, width: 640 })
    assert.equal(url, expected)
    const d = decode(url)
    assert.equal(d.path, '/_next/image')
    assert.deepEqual(d.keys, ['url', 'w', 'q'])
    assert.equal(d.url, src)
    assert.equal(d.w, '640')
    assert.equal(d.q, '75')
  })
}

test('param order is exactly url, w, q', () => {
  assert.match(loader({ src: '/x.png', width: 3840, quality: 100 }), /^\/_next\/image\?url=[^&]+&w=3840&q=75$/)
})

test('bare relative src gets a leading slash', () => {
  assert.equal(loader({ src: 'img.png', width: 32 }), '/_next/image?url=%2Fimg.png&w=32&q=75')
  assert.equal(loader({ src: 'dir/img.png', width: 32 }), '/_next/image?url=%2Fdir%2Fimg.png&w=32&q=75')
})

test('data:, blob: and empty src are returned unchanged', () => {
  for (const src of ['data:image/png;base64,iVBORw0KGgo=', 'blob:https://example.com/1234-5678', 'DATA:image/gif;base64,R0l', '']) {
    assert.equal(loader({ src, width: 640 }), src)
  }
})

test('protocol-relative src throws a clear error', () => {
  for (const src of ['//evil.example.com/a.png', '/\\evil.example.com/a.png', '\\\\evil/a.png']) {
    assert.throws(() => loader({ src, width: 640 }), /protocol-relative/)
  }
})

test('other schemes and non-string src throw', () => {
  for (const src of ['ftp://example.com/a.png', 'file:///etc/passwd', 'javascript:alert(1)']) {
    assert.throws(() => loader({ src, width: 640 }), /unsupported scheme/)
  }
  assert.throws(() => loader({ src: undefined, width: 640 }), /src must be a string/)
  assert.throws(() => loader({ src: { src: '/a.png' }, width: 640 }), /src must be a string/)
})

test('bad width throws a clear error', () => {
  for (const width of [0, -640, 640.5, NaN, Infinity, '640', undefined, null, 2 ** 53]) {
    assert.throws(() => loader({ src: '/a.png', width }), /width must be a positive integer/, String(width))
  }
})

test('lone surrogate in src throws a clear error', () => {
  assert.throws(() => loader({ src: '/\uD800.png', width: 640 }), /not valid Unicode/)
})

test('base URL: trailing slashes stripped, path prefix kept', () => {
  const cases = [
    [undefined, '/_next/image'],
    ['', '/_next/image'],
    ['https://img.example.com', 'https://img.example.com/_next/image'],
    ['https://img.example.com/', 'https://img.example.com/_next/image'],
    ['https://img.example.com///', 'https://img.example.com/_next/image'],
    ['http://127.0.0.1:8080/', 'http://127.0.0.1:8080/_next/image'],
    ['https://example.com/imgopt/', 'https://example.com/imgopt/_next/image'],
    ['  https://img.example.com/\n', 'https://img.example.com/_next/image'],
    ['/imgopt', '/imgopt/_next/image'],
    ['//img.example.com', '//img.example.com/_next/image'],
  ]
  for (const [baseUrl, prefix] of cases) {
    assert.equal(createLoader({ baseUrl }).call(null, { src: '/a.png', width: 48 }), `${prefix}?url=%2Fa.png&w=48&q=75`, String(baseUrl))
  }
})

test('base URL without scheme or slash throws', () => {
  assert.throws(() => createLoader({ baseUrl: 'img.example.com' }), /must start with http/)
})

test('custom path', () => {
  assert.equal(createLoader({ path: '/img' })({ src: '/a.png', width: 48 }), '/img?url=%2Fa.png&w=48&q=75')
  // A trailing slash is dropped: Next adds one to images.path for every custom loader.
  assert.equal(createLoader({ path: 'img/' , baseUrl: 'https://x.test/' })({ src: '/a.png', width: 48 }), 'https://x.test/img?url=%2Fa.png&w=48&q=75')
})

test('deterministic: same input, same output', () => {
  const p = { src: '/dir with space/äöü.jpg', width: 828, quality: 50 }
  assert.equal(loader(p), loader({ ...p }))
  assert.equal(imgoptLoader(p), imgoptLoader({ ...p }))
})

// --- environment -----------------------------------------------------------

function setEnv(vars) {
  const saved = {}
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k]
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
  return saved
}

async function withEnv(vars, fn) {
  const saved = setEnv(vars)
  try {
    return await fn()
  } finally {
    setEnv(saved)
  }
}

const ENV_URL = 'NEXT_PUBLIC_IMGOPT_URL'
const ENV_Q = 'NEXT_PUBLIC_IMGOPT_QUALITIES'

test('default export without env: same-origin /_next/image, q=75', async () => {
  await withEnv({ [ENV_URL]: undefined, [ENV_Q]: undefined }, () => {
    assert.equal(imgoptLoader({ src: '/a.png', width: 640, quality: 90 }), '/_next/image?url=%2Fa.png&w=640&q=75')
  })
})

test('default export reads NEXT_PUBLIC_IMGOPT_URL and NEXT_PUBLIC_IMGOPT_QUALITIES', async () => {
  await withEnv({ [ENV_URL]: 'https://img.example.com/', [ENV_Q]: '50, 75,100,junk' }, () => {
    assert.equal(imgoptLoader({ src: '/a.png', width: 640 }), 'https://img.example.com/_next/image?url=%2Fa.png&w=640&q=75')
    assert.equal(imgoptLoader({ src: '/a.png', width: 640, quality: 60 }), 'https://img.example.com/_next/image?url=%2Fa.png&w=640&q=50')
    assert.equal(imgoptLoader({ src: '/a.png', width: 640, quality: 95 }), 'https://img.example.com/_next/image?url=%2Fa.png&w=640&q=100')
  })
  await withEnv({ [ENV_URL]: '', [ENV_Q]: '' }, () => {
    assert.equal(imgoptLoader({ src: '/a.png', width: 640, quality: 60 }), '/_next/image?url=%2Fa.png&w=640&q=75')
  })
})

test('env set before a fresh import is honoured', async () => {
  await withEnv({ [ENV_URL]: 'http://127.0.0.1:9000', [ENV_Q]: '40' }, async () => {
    const mod = await import(`../index.js?fresh=${Date.now()}`)
    assert.equal(mod.default({ src: '/a.png', width: 32, quality: 90 }), 'http://127.0.0.1:9000/_next/image?url=%2Fa.png&w=32&q=40')
  })
})

test('source keeps the literal process.env expressions Next inlines', () => {
  for (const file of ['../index.js', '../index.cjs']) {
    const src = readFileSync(new URL(file, import.meta.url), 'utf8')
    assert.ok(src.includes('process.env.NEXT_PUBLIC_IMGOPT_URL'), file)
    assert.ok(src.includes('process.env.NEXT_PUBLIC_IMGOPT_QUALITIES'), file)
  }
})
