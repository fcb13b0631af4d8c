// PNG bytes sent as application/octet-stream: the content is sniffed (spec 6.3 case 59).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

export const dynamic = 'force-dynamic'
export function GET() {
  const body = readFileSync(join(process.cwd(), 'public', 'test.png'))
  return new Response(body, { headers: { 'content-type': 'application/octet-stream' } })
}
