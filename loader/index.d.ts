/** What next/image passes to a custom loader. */
export interface ImageLoaderProps {
  src: string
  /** Always a member of `deviceSizes ∪ imageSizes`. */
  width: number
  /** `undefined` unless the `<Image quality>` prop is set. */
  quality?: number
}

export type ImageLoader = (props: ImageLoaderProps) => string

export interface LoaderOptions {
  /** Origin (optionally with a path prefix) of the imgopt service. Trailing slashes are removed. Empty/undefined: same origin. */
  baseUrl?: string | null
  /** Allowed qualities (array or comma-separated string). Integers 1..100; others are ignored. Default `[75]`. */
  qualities?: readonly number[] | string | number
  /** Route on the service (Next's `images.path`, basePath included). Default `'/_next/image'`. Trailing slashes are dropped; an absolute http(s) URL is the whole endpoint. */
  path?: string
  /** As Next's `images.dangerouslyAllowSVG`: when false (default), `.svg` srcs are returned unchanged instead of being sent to the service. */
  dangerouslyAllowSVG?: boolean
  /** Next's `deploymentId`: added as `&dpl=` for local srcs (a `?dpl=` in the src is moved there). */
  deploymentId?: string
  /** As Next's `supportsImmutableAssets`: no `dpl` for `/_next/static/immutable/` srcs. */
  supportsImmutableAssets?: boolean
}

/** Loader configured from the Next.js build it is compiled into (images.qualities, images.path, images.dangerouslyAllowSVG, deploymentId) and `NEXT_PUBLIC_IMGOPT_URL`; `NEXT_PUBLIC_IMGOPT_QUALITIES` outside a Next build. */
declare function imgoptLoader(props: ImageLoaderProps): string
export default imgoptLoader

/** Returns a loader bound to explicit settings (ignores the environment). */
export declare function createLoader(options?: LoaderOptions): ImageLoader

/** Next's rule: `quality || 75`, then the closest allowed value; ties go to the earlier (lower) one. */
export declare function findClosestQuality(quality: number | undefined, qualities?: readonly number[]): number

/** Parses an allowed-qualities list: keeps integers 1..100, de-duplicates, sorts; `[75]` if none are valid. */
export declare function parseQualities(input: readonly (number | string)[] | string | number | undefined | null): number[]

/** What the imgopt service's `/_next/image/placeholder` endpoint answers. */
export interface Placeholder {
  /** ThumbHash of the image, standard base64 (decode with the `thumbhash` package). */
  thumbhash: string
  /** A tiny blurred WebP as a data URL, for `<Image placeholder="blur" blurDataURL={…}>`. */
  blurDataURL: string
  /** Intrinsic width after EXIF rotation. */
  width: number
  /** Intrinsic height after EXIF rotation. */
  height: number
  /** `#rrggbb`. */
  dominantColor: string
}

export interface PlaceholderOptions {
  /** Absolute origin (optionally with a path prefix) of the imgopt service. Default: `NEXT_PUBLIC_IMGOPT_URL`. */
  baseUrl?: string | null
  /** Image route on the service. Default `'/_next/image'` (the endpoint is `${path}/placeholder`). */
  path?: string
  /** A fetch implementation. Default: the global `fetch` (Node 18+). */
  fetch?: (input: string, init?: { headers?: Record<string, string>; signal?: AbortSignal }) => Promise<Response>
  signal?: AbortSignal
}

/** Build-time helper: fetches the placeholder for `src` from the imgopt service. Rejects on HTTP errors. */
export declare function getPlaceholder(src: string, options?: PlaceholderOptions): Promise<Placeholder>

