import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { readFileSync } from 'node:fs'
import vm from 'node:vm'
import * as esm from '../index.js'
import { buildCjs } from '../scripts/build-cjs.mjs'

const require = createRequire(import.meta.url)
const cjs = require('../index.cjs')
const read = (f) => readFileSync(new URL(f, import.meta.url), 'utf8')

test('index.cjs is up to date with index.js (run `npm run build`)', () => {
  assert.equal(read('../index.cjs'), buildCjs(read('../index.js')))
})

test('CJS exports: callable module, default, named', () => {
  assert.equal(typeof cjs, 'function')
  assert.equal(cjs.default, cjs)
  assert.equal(cjs.__esModule, true)
  for (const name of ['createLoader', 'findClosestQuality', 'parseQualities']) {
    assert.equal(typeof cjs[name], 'function', name)
    assert.equal(typeof esm[name], 'function', name)
  }
  assert.equal(typeof esm.default, 'function')
})

test('package exports resolve: import and require conditions', async () => {
  const pkg = JSON.parse(read('../package.json'))
  assert.equal(pkg.name, '@imgopt/next-loader')
  assert.deepEqual(pkg.dependencies ?? {}, {})
  const viaRequire = require('@imgopt/next-loader') // self-reference through "exports"
  const viaImport = await import('@imgopt/next-loader')
  assert.equal(viaRequire, cjs)
  assert.equal(viaImport.default, esm.default)
})

test('CJS and ESM give identical results', () => {
  const srcs = ['/test.png', '/dir with space/äöü.jpg', '/a.png?v=1', '/a#b+c%d&e.png', 'https://x.test/a b.png?q=1', 'img.png', 'data:image/png;base64,AA==']
  const settings = [{}, { baseUrl: 'https://img.example.com/', qualities: [30, 60, 90] }, { qualities: '10,50', path: '/img' }]
  for (const s of settings) {
    const a = esm.createLoader(s)
    const b = cjs.createLoader(s)
    for (const src of srcs) {
      for (const width of [32, 640, 3840]) {
        for (const quality of [undefined, 1, 45, 75, 100]) {
          assert.equal(a({ src, width, quality }), b({ src, width, quality }))
        }
      }
    }
  }
  assert.equal(esm.default({ src: '/a.png', width: 640 }), cjs({ src: '/a.png', width: 640 }))
  for (const bad of [{ src: '//x/a.png', width: 640 }, { src: '/a.png', width: 0 }]) {
    assert.throws(() => esm.default(bad))
    assert.throws(() => cjs(bad))
  }
})

// Run index.cjs the way a bundle would: optionally with Next's textual
// replacement of process.env.NEXT_PUBLIC_*, and in a context without `process`.
function runBundled(replacements) {
  let code = read('../index.cjs')
  for (const [expr, value] of Object.entries(replacements)) code = code.split(expr).join(JSON.stringify(value))
  const module = { exports: {} }
  vm.runInNewContext(code, { module, exports: module.exports }) // no `process` here
  return module.exports
}

test('browser without process and no inlining: same-origin, q=75', () => {
  const loader = runBundled({})
  assert.equal(loader({ src: '/a.png', width: 640, quality: 50 }), '/_next/image?url=%2Fa.png&w=640&q=75')
})

test('browser with Next-inlined env values', () => {
  const loader = runBundled({
    'process.env.NEXT_PUBLIC_IMGOPT_URL': 'https://img.example.com/',
    'process.env.NEXT_PUBLIC_IMGOPT_QUALITIES': '50,75',
  })
  assert.equal(loader({ src: '/a.png', width: 640, quality: 55 }), 'https://img.example.com/_next/image?url=%2Fa.png&w=640&q=50')
})
