"""The one error type that crosses steps: an HTTP status and a message a person can act on."""

from __future__ import annotations


class ImageError(Exception):
    """A request that cannot be answered with an image; `status` is the HTTP status to send."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ImageError({self.status}, {self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:  # crosses from a worker process intact
        return (_image_error, (self.status, self.message, self.retry_after))


def _image_error(status: int, message: str, retry_after: int | None) -> ImageError:
    return ImageError(status, message, retry_after=retry_after)


# Messages shared by several steps (exact Next.js wording where Next has one).
UPSTREAM_INVALID = '"url" parameter is valid but upstream response is invalid'
INTERNAL_INVALID = '"url" parameter is valid but internal response is invalid'
UPSTREAM_TIMEOUT = '"url" parameter is valid but upstream response timed out'
NOT_ALLOWED = '"url" parameter is not allowed'
NOT_AN_IMAGE = "The requested resource isn't a valid image."
TYPE_NOT_ALLOWED = '"url" parameter is valid but image type is not allowed'
