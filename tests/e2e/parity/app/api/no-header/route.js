// Spec 6.1 fixtures: a body that is not an image, with no Content-Type.
export const dynamic = 'force-dynamic'
export function GET() {
  const res = new Response(new TextEncoder().encode('foo'))
  res.headers.delete('content-type')
  return res
}
