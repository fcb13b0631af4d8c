// getPlaceholder() against a local stub of the imgopt placeholder endpoint (the real endpoint
// is tested from Python: tests/test_placeholder.py).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { createRequire } from 'node:module'
import { getPlaceholder } from '../index.js'

const require = createRequire(import.meta.url)
const cjs = require('../index.cjs')

const BODY = {
  thumbhash: '1QcSHQRnh493V4dIh4eXh1h4kJUI',
  blurDataURL: 'data:image/webp;base64,UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA',
  width: 1920,
  height: 1280,
  dominantColor: '#6f86a5',
}

let server
let base
const seen = []

before(async () => {
  server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://stub')
    seen.push({ path: u.pathname, url: u.searchParams.get('url'), accept: req.headers.accept, raw: req.url })
    if (u.pathname.endsWith('/placeholder') && u.searchParams.get('url') === '/missing.png') {
      res.writeHead(404, { 'content-type': 'text/plain' })
      return res.end('"url" parameter is valid but internal response is invalid')
    }
    if (u.pathname.endsWith('/placeholder') && u.searchParams.get('url') === '/weird.png') {
      res.writeHead(200, { 'content-type': 'application/json' })
      return res.end(JSON.stringify({ hello: 'world' }))
    }
    if (u.pathname.endsWith('/placeholder')) {
      res.writeHead(200, { 'content-type': 'application/json' })
      return res.end(JSON.stringify({ ...BODY, extra: 1 }))
    }
    res.writeHead(404)
    res.end()
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${server.address().port}`
})

after(() => new Promise((resolve) => server.close(resolve)))

test('fetches the placeholder JSON with the url encoded as the image loader does', async () => {
  const p = await getPlaceholder('/dir with space/äö&x=1.png', { baseUrl: base + '/' })
  assert.deepEqual(p, BODY) // only the documented fields
  const last = seen.at(-1)
  assert.equal(last.path, '/_next/image/placeholder')
  assert.equal(last.url, '/dir with space/äö&x=1.png')
  assert.equal(last.raw, '/_next/image/placeholder?url=%2Fdir%20with%20space%2F%C3%A4%C3%B6%26x%3D1.png')
  assert.equal(last.accept, 'application/json')
})

test('remote src, path prefix in baseUrl and a custom path', async () => {
  await getPlaceholder('https://cdn.example.com/a.jpg?v=2', { baseUrl: `${base}/imgopt`, path: 'img/' })
  assert.equal(seen.at(-1).path, '/imgopt/img/placeholder')
  assert.equal(seen.at(-1).url, 'https://cdn.example.com/a.jpg?v=2')
})

test('bare relative src becomes a local path', async () => {
  await getPlaceholder('photo.jpg', { baseUrl: base })
  assert.equal(seen.at(-1).url, '/photo.jpg')
})

test('HTTP errors reject with the status and the service message', async () => {
  await assert.rejects(getPlaceholder('/missing.png', { baseUrl: base }), (e) => {
    assert.match(e.message, /^@imgopt\/next-loader: placeholder for "\/missing.png" failed: HTTP 404 "url" parameter is valid/)
    return true
  })
})

test('an unexpected body rejects', async () => {
  await assert.rejects(getPlaceholder('/weird.png', { baseUrl: base }), /unexpected response/)
})

test('bad arguments reject before any request', async () => {
  const before = seen.length
  await assert.rejects(getPlaceholder('/a.png', { baseUrl: '/relative' }), /absolute baseUrl/)
  await assert.rejects(getPlaceholder('/a.png', { baseUrl: '' }), /absolute baseUrl/)
  await assert.rejects(getPlaceholder('//host/a.png', { baseUrl: base }), /protocol-relative/)
  await assert.rejects(getPlaceholder('data:image/png;base64,AA==', { baseUrl: base }), /data: URL/)
  await assert.rejects(getPlaceholder('ftp://x/a.png', { baseUrl: base }), /unsupported scheme/)
  await assert.rejects(getPlaceholder('/\ud800.png', { baseUrl: base }), /lone surrogate/)
  assert.equal(seen.length, before)
})

test('baseUrl defaults to NEXT_PUBLIC_IMGOPT_URL', async () => {
  process.env.NEXT_PUBLIC_IMGOPT_URL = base
  try {
    assert.deepEqual(await getPlaceholder('/env.png'), BODY)
    assert.equal(seen.at(-1).url, '/env.png')
  } finally {
    delete process.env.NEXT_PUBLIC_IMGOPT_URL
  }
})

test('a custom fetch is used', async () => {
  const calls = []
  const fakeFetch = async (url, init) => {
    calls.push([url, init.headers.accept])
    return new Response(JSON.stringify(BODY), { status: 200, headers: { 'content-type': 'application/json' } })
  }
  assert.deepEqual(await getPlaceholder('/a.png', { baseUrl: 'https://img.example.com', fetch: fakeFetch }), BODY)
  assert.deepEqual(calls, [['https://img.example.com/_next/image/placeholder?url=%2Fa.png', 'application/json']])
})

test('the CommonJS entry exports the same helper', async () => {
  assert.equal(typeof cjs.getPlaceholder, 'function')
  assert.deepEqual(await cjs.getPlaceholder('/a.png', { baseUrl: base }), BODY)
})
