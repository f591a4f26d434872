"""PNG and JPEG bytes without their metadata: text, EXIF, XMP, ICC, comments (possible patient data).

Ingest stores a PNG or JPEG as found (nothing lost, no re-encoding cost) but nothing it carries
besides the image. Kept is what can hold no text: PNG's IHDR, PLTE, tRNS, IDAT, IEND and the numeric
colour/size chunks (gAMA, cHRM, sRGB, sBIT, pHYs, bKGD), nothing after IEND; JPEG's coding segments
(SOF, DHT, DQT, DRI, SOS + scan data, ...), a JFIF APP0 without thumbnail and the Adobe APP14
colour-transform flag, nothing after EOI. Dropped: PNG tEXt/iTXt/zTXt/eXIf/iCCP/tIME/private
chunks, JPEG APP1-APP13/APP15 (EXIF, XMP, ICC, IPTC) and COM. A keep-list, so a chunk or segment
unknown here is dropped too. The caller checks that the result decodes to the same pixels.
"""

from __future__ import annotations

import re

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
_PNG_KEPT = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"pHYs", b"bKGD"}
_APP0, _APP14, _APP15, _COM, _SOS, _EOI = 0xE0, 0xEE, 0xEF, 0xFE, 0xDA, 0xD9
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # in scan data, FF00 is a literal 0xFF; RSTn stays inside
_JFIF_WITHOUT_THUMBNAIL = 16  # segment length: identifier, version, units, density, thumbnail 0x0


def strip(data: bytes) -> bytes | None:
    """`data` without metadata; None when it is not a PNG or JPEG this can parse (store it re-encoded)."""
    try:
        if data.startswith(PNG_SIGNATURE):
            return _png(data)
        if data.startswith(JPEG_SOI):
            return _jpeg(data)
    except (IndexError, ValueError):
        return None
    return None


def _png(data: bytes) -> bytes:
    out, at = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while True:
        length = int.from_bytes(data[at : at + 4], "big")
        kind, end = data[at + 4 : at + 8], at + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind in _PNG_KEPT:
            out.append(data[at:end])
        if kind == b"IEND":
            return b"".join(out)
        at = end


def _jpeg(data: bytes) -> bytes:
    out, at = [JPEG_SOI], 2
    while True:
        if data[at] != 0xFF:
            raise ValueError("not at a JPEG marker")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == _EOI:
            out.append(data[at : at + 2])
            return b"".join(out)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            out.append(data[at : at + 2])
            at += 2
            continue
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if end > len(data):
            raise ValueError("truncated JPEG segment")
        if marker == _SOS:
            end = _scan_end(data, end)
        if _kept(marker, data[at:end]):
            out.append(data[at:end])
        at = end


def _scan_end(data: bytes, at: int) -> int:
    """Where a scan's entropy-coded data ends: the first 0xFF that is not stuffing (FF00), a RSTn or fill."""
    marker = _MARKER.search(data, at)
    if marker is None:
        raise ValueError("JPEG scan without an end")
    return marker.start()


def _kept(marker: int, segment: bytes) -> bool:
    if marker == _COM:
        return False
    if marker == _APP0:
        return segment[4:9] == b"JFIF\x00" and len(segment) - 2 == _JFIF_WITHOUT_THUMBNAIL
    if marker == _APP14:
        return segment[4:9] == b"Adobe"
    return not _APP0 < marker <= _APP15
