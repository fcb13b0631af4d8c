import Image from 'next/image'
import Link from 'next/link'
import hero from '../media/hero.jpg'

const bp = process.env.IMGOPT_E2E_BASE_PATH

// Home: a static import with `fill` + `sizes` + `priority` + a blur placeholder, a public/
// image whose path has a space (1x/2x), an image at the second allowed quality, and two
// SVGs: one that Next serves as it is (no loader call for SVG unless dangerouslyAllowSVG) and
// one marked `unoptimized`.
export default function Home() {
  return (
    <main>
      <div className="hero">
        <Image id="hero" src={hero} alt="Hero" fill sizes="100vw" priority placeholder="blur"
          style={{ objectFit: 'cover' }} />
      </div>
      <h1>imgopt e2e site</h1>
      <p className="row">
        <Image id="fixed" src={`${bp}/img/dir with space/photo.jpg`} alt="Fixed width 300" width={300} height={200} />
        <Image id="q50" src={`${bp}/img/tile.png`} alt="Quality 50" width={200} height={200} quality={50} />
        <Image id="logo" src={`${bp}/img/logo.svg`} alt="SVG" width={120} height={120} />
        <Image id="logo-unopt" src={`${bp}/img/logo.svg`} alt="SVG, unoptimized" width={120} height={120} unoptimized />
      </p>
      <p>
        <Link href="/gallery">Gallery</Link>
      </p>
    </main>
  )
}
