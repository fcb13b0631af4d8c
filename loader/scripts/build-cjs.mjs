// Generates index.cjs from index.js (the single source). Run: npm run build
// `buildCjs()` is also used by the tests to check index.cjs is up to date.
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const root = new URL('../', import.meta.url)

export function buildCjs(esmSource) {
  const body = esmSource
    .replace(/^export default function /gm, 'function ')
    .replace(/^export (async )?function /gm, '$1function ')
  if (/^\s*(export|import)\b/m.test(body)) {
    throw new Error('index.js uses an export/import form build-cjs.mjs does not handle')
  }
  return (
    '// GENERATED from index.js by scripts/build-cjs.mjs. Do not edit.\n' +
    "'use strict'\n\n" +
    body +
    '\n' +
    'module.exports = imgoptLoader\n' +
    "Object.defineProperty(module.exports, '__esModule', { value: true })\n" +
    'module.exports.default = imgoptLoader\n' +
    'module.exports.createLoader = createLoader\n' +
    'module.exports.findClosestQuality = findClosestQuality\n' +
    'module.exports.parseQualities = parseQualities\n' +
    'module.exports.getPlaceholder = getPlaceholder\n'
  )
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const src = readFileSync(new URL('index.js', root), 'utf8')
  writeFileSync(new URL('index.cjs', root), buildCjs(src))
  console.log('wrote index.cjs')
}
