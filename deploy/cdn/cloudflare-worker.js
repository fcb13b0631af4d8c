// Cloudflare Worker on the route example.com/_next/image*: fetches from imgopt with Accept
// rewritten to the tokens imgopt negotiates on and the chosen format in the cache key, so the
// cache holds one object per output format instead of one per browser. (A custom cacheKey
// needs an Enterprise plan; on other plans use the Cache API with the same key, or the Cache
// Rules "Vary" setting on the normalised Accept header.) tests/test_cdn.py runs `imgoptAccept`
// with node on real browsers' Accept headers.
export function imgoptAccept(accept) {
  const a = (accept || '').toLowerCase()
  // AVIF alone is kept apart: with --fast-first the first answer to AVIF-and-WebP clients can be a WebP
  if (a.includes('image/avif')) return a.includes('image/webp') ? 'image/avif,image/webp' : 'image/avif'
  if (a.includes('image/webp')) return 'image/webp'
  return ''
}

export default {
  async fetch(request) {
    const accept = imgoptAccept(request.headers.get('accept'))
    const headers = new Headers(request.headers)
    if (accept) headers.set('accept', accept)
    else headers.delete('accept')
    headers.delete('x-request-id')
    headers.delete('cookie')
    const url = new URL(request.url)
    const response = await fetch(new Request(url, { method: request.method, headers }), {
      cf: { cacheKey: `${url.href}|${accept}`, cacheEverything: true },
    })
    // The response is shared by everyone who asks for this format.
    const out = new Response(response.body, response)
    out.headers.delete('x-request-id')
    return out
  },
}
