// SVG bytes sent as image/png: the bytes decide, not the header (spec 6.3 case 53).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

export const dynamic = 'force-dynamic'
export function GET() {
  const body = readFileSync(join(process.cwd(), 'public', 'test.svg'))
  return new Response(body, { headers: { 'content-type': 'image/png' } })
}
