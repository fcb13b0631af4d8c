import Image from 'next/image'
import still from '../../media/still.jpg'

const remote = `${process.env.IMGOPT_E2E_REMOTE_ORIGIN}/large.jpg`

// A remote image, a static import, and `fill` tiles (a file name with a space, one with Unicode).
export default function Gallery() {
  return (
    <main>
      <h1>Gallery</h1>
      <div className="cols2">
        <Image
          id="remote"
          src={remote}
          alt="Remote image from the test origin"
          width={3000}
          height={2000}
          sizes="(max-width: 640px) 100vw, 50vw"
          className="full"
        />
        <Image
          id="static"
          src={still}
          alt="Static import"
          sizes="(max-width: 640px) 100vw, 50vw"
          className="full"
        />
      </div>
      <div className="cols3">
        {[
          ['tile-png', '/img/tile.png'],
          ['tile-space', '/img/dir with space/photo.jpg'],
          ['tile-unicode', '/img/äöüščří.png'],
        ].map(([id, src]) => (
          <div className="tile" key={id}>
            <Image id={id} src={src} alt={`Tile ${id}`} fill sizes="(max-width: 640px) 50vw, 33vw" style={{ objectFit: 'cover' }} />
          </div>
        ))}
      </div>
    </main>
  )
}
