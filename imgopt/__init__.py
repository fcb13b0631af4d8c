"""imgopt: a self-hosted, Next.js-compatible image optimization service on libvips."""

__version__ = "0.2.0"
