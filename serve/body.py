"""Get the image bytes out of a request: a raw body (image/*, application/dicom) or multipart field `file`.

Size is capped twice: by the declared Content-Length before anything is read, and while the body
streams in (a client may lie or send chunked). Multipart goes through python-multipart's streaming
parser in a worker thread, and stops at `MAX_PARTS` parts: the standard library's email parser on
the event loop took ~9 s for a 4 MB body of tiny parts, and the replica answered nothing meanwhile.
Errors quote client text (content type, part names) only as `serve.public.excerpt`s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from serve.public import excerpt

FIELD = "file"
# The image and, say, a browser form's few extra fields; the client (serve/client.py) sends one.
MAX_PARTS = 16
RAW_TYPES = ("image/", "application/dicom")
FRAME_DIGITS = 4  # frames are capped at 1200 (models.limits.MAX_FRAMES)
ACCEPTED = "an image body (image/png, image/jpeg, image/bmp, application/dicom) or multipart/form-data field 'file'"


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
    if not (multipart or media_type.startswith(RAW_TYPES)):
        shown = excerpt(media_type) if media_type else "(none)"
        raise BadRequest(415, f"unsupported content type {shown}; send {ACCEPTED}")
    if content_length and content_length.strip().isdigit() and int(content_length) > max_bytes:
        raise BadRequest(413, f"body of {int(content_length)} bytes exceeds the limit of {max_bytes}")
    body = await _read_capped(stream, max_bytes)
    if multipart:
        body = await asyncio.to_thread(multipart_field, content_type or "", body)
    if not body:
        raise BadRequest(400, f"empty image; send {ACCEPTED}")
    return body


def query_frame(params: list[tuple[str, str]]) -> int | None:
    """The query string's one parameter, an optional `frame`; BadRequest for any other or a repeat."""
    names = [name for name, _ in params]
    if unknown := sorted(set(names) - {"frame"}):
        raise BadRequest(400, f"unknown query parameter {excerpt(unknown[0], 20)}; the only one is frame=N")
    if len(names) > 1:
        raise BadRequest(400, "frame is given more than once")
    return frame_number(params[0][1] if params else None)


def frame_number(text: str | None) -> int | None:
    """The `?frame=N` query parameter: which frame of a multi-frame DICOM (1 = the first), or BadRequest.
    ASCII digits only, at most FRAME_DIGITS of them: str.isdigit() also accepts '²' (which int() refuses)."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= FRAME_DIGITS and int(text) >= 1):
        raise BadRequest(400, f"frame={excerpt(text, 20)}: expected a frame number (1 = the first)")
    return int(text)


async def _read_capped(stream: AsyncIterator[bytes], max_bytes: int) -> bytes:
    chunks, total = [], 0
    async for chunk in stream:
        total += len(chunk)
        if total > max_bytes:
            raise BadRequest(413, f"body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def multipart_field(content_type: str, body: bytes) -> bytes:
    """The payload of field `file` in a multipart body (the first such part); BadRequest (400) else."""
    if not body:
        raise BadRequest(400, f"empty multipart body; send the image as field '{FIELD}'")
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise BadRequest(400, "malformed multipart body (no boundary in the content type)")
    form = _Form()
    try:
        parser = MultipartParser(boundary, form.callbacks())
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(400, "malformed multipart body (is the boundary right?)") from exc
    if not form.ended:
        raise BadRequest(400, "malformed multipart body (no closing boundary; is the boundary right?)")
    if form.payload is None:
        shown = ", ".join(excerpt(name, 20) for name in form.names[:3]) + (", ..." if len(form.names) > 3 else "")
        raise BadRequest(400, f"multipart body has no field '{FIELD}' (got: {shown or 'no parts'})")
    return b"".join(form.payload)


class _Form:
    """The parser's callbacks: count parts, note each part's name, keep the first `file` part's bytes."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.payload: list[bytes] | None = None
        self.ended = False
        self._field: list[bytes] = []
        self._value: list[bytes] = []
        self._disposition = b""
        self._reading = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.append(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.append(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        if len(self.names) >= MAX_PARTS:
            raise BadRequest(400, f"multipart body has more than {MAX_PARTS} parts; send the image as field '{FIELD}'")
        self._disposition = b""

    def _header_end(self) -> None:
        field, value = b"".join(self._field).lower(), b"".join(self._value)
        self._field, self._value = [], []
        if field == b"content-disposition":
            self._disposition = value

    def _headers_finished(self) -> None:
        name = parse_options_header(self._disposition)[1].get(b"name", b"").decode("latin-1")
        self.names.append(name)
        self._reading = name == FIELD and self.payload is None
        if self._reading:
            self.payload = []

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._reading:
            self.payload.append(data[start:end])

    def _part_end(self) -> None:
        self._reading = False

    def _end(self) -> None:
        self.ended = True
