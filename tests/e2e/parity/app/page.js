// A static import, so the build emits /_next/static/media/still.<hash>.jpg (spec 6.5 case 76:
// the optimizer answers those with `public, max-age=315360000, immutable`).
import still from '../media/still.jpg'

export default function Page() {
  return <p data-still={still.src}>imgopt parity app: only its public/ folder, API routes and /_next/image are used.</p>
}
