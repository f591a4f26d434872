"""The error of an unusable image, with the HTTP status to answer it with (its own module: both
models.preprocess and models.dicom raise it)."""

from __future__ import annotations


class ImageError(ValueError):
    """Bytes that are not a usable image; `status` is the HTTP status to answer with.

    413: too many pixels (or a decompression bomb), 415: not an image, not PNG/JPEG/BMP/DICOM, or a
    DICOM transfer syntax without an installed decoder,
    400: anything else (empty, corrupt, truncated, unsupported pixel layout).
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # keep `status` when Ray ships the error between processes
        return type(self), (str(self), self.status)
