// CloudFront Functions (JavaScript runtime 2.0), viewer request, on the behavior for
// /_next/image*: rewrites Accept to the tokens imgopt negotiates on, so that the cache policy
// (which must include the Accept header in the cache key) stores one object per output format
// instead of one per browser. tests/test_cdn.py runs this handler with node on real browsers'
// Accept headers.
async function handler(event) {
  var request = event.request
  var accept = request.headers['accept'] ? request.headers['accept'].value.toLowerCase() : ''
  var avif = accept.indexOf('image/avif') !== -1
  var webp = accept.indexOf('image/webp') !== -1
  if (avif && webp) {
    request.headers['accept'] = { value: 'image/avif,image/webp' }
  } else if (avif) {
    // kept apart: with --fast-first the first answer to AVIF-and-WebP clients can be a WebP
    request.headers['accept'] = { value: 'image/avif' }
  } else if (webp) {
    request.headers['accept'] = { value: 'image/webp' }
  } else {
    delete request.headers['accept']
  }
  // A request id names one request: never let it into a cached object.
  delete request.headers['x-request-id']
  return request
}
