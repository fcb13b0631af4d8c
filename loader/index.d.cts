// Types for the CommonJS entry (index.cjs). Keep in sync with index.d.ts.
declare namespace imgoptLoader {
  export interface ImageLoaderProps {
    src: string
    /** Always a member of `deviceSizes ∪ imageSizes`. */
    width: number
    /** `undefined` unless the `<Image quality>` prop is set. */
    quality?: number
  }
  export type ImageLoader = (props: ImageLoaderProps) => string
  export interface LoaderOptions {
    baseUrl?: string | null
    qualities?: readonly number[] | string | number
    path?: string
    dangerouslyAllowSVG?: boolean
    deploymentId?: string
    supportsImmutableAssets?: boolean
  }
  export const __esModule: true
  const _default: typeof imgoptLoader
  export { _default as default }
  export function createLoader(options?: LoaderOptions): ImageLoader
  export function findClosestQuality(quality: number | undefined, qualities?: readonly number[]): number
  export function parseQualities(input: readonly (number | string)[] | string | number | undefined | null): number[]
  export interface Placeholder {
    thumbhash: string
    blurDataURL: string
    width: number
    height: number
    dominantColor: string
  }
  export interface PlaceholderOptions {
    baseUrl?: string | null
    path?: string
    fetch?: (input: string, init?: { headers?: Record<string, string>; signal?: AbortSignal }) => Promise<Response>
    signal?: AbortSignal
  }
  export function getPlaceholder(src: string, options?: PlaceholderOptions): Promise<Placeholder>
}

/** Loader configured from the Next.js build it is compiled into (images.qualities, images.path, images.dangerouslyAllowSVG, deploymentId) and `NEXT_PUBLIC_IMGOPT_URL`; `NEXT_PUBLIC_IMGOPT_QUALITIES` outside a Next build. */
declare function imgoptLoader(props: imgoptLoader.ImageLoaderProps): string

export = imgoptLoader
