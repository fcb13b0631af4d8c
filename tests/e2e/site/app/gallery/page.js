import Image, { getImageProps } from 'next/image'
import still from '../../media/still.jpg'

const bp = process.env.IMGOPT_E2E_BASE_PATH
const remote = `${process.env.IMGOPT_E2E_REMOTE_ORIGIN}/large.jpg`

// Art direction with getImageProps(): a <picture> whose <source> is used on wide screens.
function ArtDirected() {
  const common = { alt: 'Art directed', sizes: '100vw' }
  const { props: { srcSet: wide } } = getImageProps({ ...common, id: 'pic-wide', src: `${bp}/img/wide.jpg`, width: 1600, height: 500 })
  const { props: narrow } = getImageProps({ ...common, id: 'picture', src: `${bp}/img/narrow.jpg`, width: 800, height: 800 })
  return (
    <picture>
      <source media="(min-width: 800px)" srcSet={wide} sizes="100vw" />
      <img {...narrow} className="full" />
    </picture>
  )
}

// Gallery: a remote image, a static import with a blur placeholder, `fill` tiles (a file
// name with Unicode), and a <picture>.
export default function Gallery() {
  return (
    <main>
      <h1>Gallery</h1>
      <div className="cols2">
        <Image id="remote" src={remote} alt="Remote image from the test origin" width={1200} height={800}
          sizes="(max-width: 640px) 100vw, 50vw" className="full" />
        <Image id="static" src={still} alt="Static import" sizes="(max-width: 640px) 100vw, 50vw"
          placeholder="blur" className="full" />
      </div>
      <div className="cols3">
        {[
          ['tile-png', `${bp}/img/tile.png`],
          ['tile-unicode', `${bp}/img/äöüščří.png`],
          ['tile-jpg', `${bp}/img/photo.jpg`],
        ].map(([id, src]) => (
          <div className="tile" key={id}>
            <Image id={id} src={src} alt={`Tile ${id}`} fill sizes="(max-width: 640px) 50vw, 33vw" style={{ objectFit: 'cover' }} />
          </div>
        ))}
      </div>
      <ArtDirected />
    </main>
  )
}
