// Prints, one JSON object per line, every URL the loader makes with the default
// settings (no base URL, qualities [75]) for a table of srcs x every width of
// Next 16's default deviceSizes + imageSizes x qualities {undefined, 50, 75, 100}.
//   node loader/test/urls-for-default-config.mjs
// Line shape: {"src": "...", "width": 640, "quality": null|50|75|100, "url": "/_next/image?..."}
// ("quality": null means the <Image quality> prop is not set.)
//
// The file lives under test/, so `node --test` also runs it. Then, instead of
// printing, it checks the table.
import { createLoader } from '../index.js'

export const SRCS = ['/test.png', '/dir with space/äöü.jpg', '/_next/static/media/test.fab2915d.jpg', '/a+b&c=d.png', '/100%.png']
export const DEVICE_SIZES = [640, 750, 828, 1080, 1200, 1920, 2048, 3840]
export const IMAGE_SIZES = [32, 48, 64, 96, 128, 256, 384]
export const WIDTHS = [...DEVICE_SIZES, ...IMAGE_SIZES].sort((a, b) => a - b)
export const QUALITIES = [undefined, 50, 75, 100]

export function rows() {
  // Explicit defaults, so a NEXT_PUBLIC_IMGOPT_* variable in the shell cannot change the output.
  const loader = createLoader({ baseUrl: '', qualities: [75] })
  const out = []
  for (const src of SRCS) {
    for (const width of WIDTHS) {
      for (const quality of QUALITIES) {
        out.push({ src, width, quality: quality ?? null, url: loader({ src, width, quality }) })
      }
    }
  }
  return out
}

if (process.env.NODE_TEST_CONTEXT) {
  const { test } = await import('node:test')
  const assert = (await import('node:assert/strict')).default
  test('urls-for-default-config: table is complete and every URL round-trips', () => {
    const all = rows()
    assert.equal(all.length, SRCS.length * WIDTHS.length * QUALITIES.length)
    for (const r of all) {
      const u = new URL(r.url, 'http://service.invalid')
      assert.equal(u.pathname, '/_next/image')
      assert.deepEqual([...u.searchParams], [['url', r.src], ['w', String(r.width)], ['q', '75']])
    }
  })
} else {
  process.stdout.write(rows().map((r) => JSON.stringify(r)).join('\n') + '\n')
}
