import Image from 'next/image'
import Link from 'next/link'

// Local images from public/: `fill` + `sizes` + `priority`, and a fixed-width image (1x/2x).
export default function Home() {
  return (
    <main>
      <div className="hero">
        <Image
          id="hero"
          src="/img/hero.jpg"
          alt="Hero: local, fill, sizes 100vw, priority"
          fill
          sizes="100vw"
          priority
          style={{ objectFit: 'cover' }}
        />
      </div>
      <h1>imgopt e2e site</h1>
      <p>
        <Image id="fixed" src="/img/photo.jpg" alt="Fixed width 300, preload" width={300} height={200} preload />
      </p>
      <p>
        <Link href="/gallery">Gallery</Link>
      </p>
    </main>
  )
}
