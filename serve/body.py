"""Get the image bytes out of a request: a raw body with an image/* type, or multipart field `file`.

Size is capped twice: by the declared Content-Length before anything is read, and while the body
streams in (a client may lie or send chunked). Multipart is parsed with the standard library's
`email` parser (FastAPI's form support needs python-multipart, which busnet does not depend on).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email import policy
from email.parser import BytesParser

FIELD = "file"
ACCEPTED = "an image/* body (image/png, image/jpeg, image/bmp), application/dicom, or multipart/form-data field 'file'"


class BadRequest(Exception):
    """A request we answer with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def read_image_bytes(
    content_type: str | None, content_length: str | None, stream: AsyncIterator[bytes], max_bytes: int
) -> bytes:
    """The image's bytes, or BadRequest: 415 wrong type, 413 too large, 400 empty/bad multipart."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    multipart = media_type == "multipart/form-data"
    if not (multipart or media_type.startswith("image/") or media_type == "application/dicom"):
        raise BadRequest(415, f"unsupported content type {media_type or '(none)'}; send {ACCEPTED}")
    if content_length and content_length.strip().isdigit() and int(content_length) > max_bytes:
        raise BadRequest(413, f"body of {int(content_length)} bytes exceeds the limit of {max_bytes}")
    body = await _read_capped(stream, max_bytes)
    if multipart:
        body = _multipart_field(content_type or "", body)
    if not body:
        raise BadRequest(400, f"empty image; send {ACCEPTED}")
    return body


def frame_number(text: str | None) -> int | None:
    """The `?frame=N` query parameter: which frame of a multi-frame DICOM (1 = the first), or BadRequest."""
    if text is None:
        return None
    if not (text.isdigit() and int(text) >= 1):
        raise BadRequest(400, f"frame={text[:20]!r}: expected a frame number (1 = the first)")
    return int(text)


async def _read_capped(stream: AsyncIterator[bytes], max_bytes: int) -> bytes:
    chunks, total = [], 0
    async for chunk in stream:
        total += len(chunk)
        if total > max_bytes:
            raise BadRequest(413, f"body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _multipart_field(content_type: str, body: bytes) -> bytes:
    if not body:
        raise BadRequest(400, f"empty multipart body; send the image as field '{FIELD}'")
    header = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(header + body)
    parts = list(message.iter_parts()) if message.is_multipart() else []
    if not parts:
        raise BadRequest(400, "malformed multipart body (no parts; is the boundary right?)")
    names = [part.get_param("name", header="content-disposition") for part in parts]
    if FIELD not in names:
        shown = ", ".join(str(n) for n in names)
        raise BadRequest(400, f"multipart body has no field '{FIELD}' (got: {shown})")
    return parts[names.index(FIELD)].get_payload(decode=True) or b""
