"""What callers may see: no local paths, no raw user_config, client text only as a short excerpt.

Error answers and logs quote at most `EXCERPT_CHARS` printable characters of anything a client
sent (a part name, a content type), so a request cannot fill the log or shape the answer; the
health and model endpoints show checkpoint metadata with every path-like string redacted, since a
path tells a caller about the machines behind the service.
"""

from __future__ import annotations

import re
from typing import Any

EXCERPT_CHARS = 40
# A run of non-space characters that holds a / or \: a local path, a file:// or s3:// URI.
_PATH = re.compile(r"[^\s'\"(),;\[\]{}]*[/\\][^\s'\"(),;\[\]{}]*")


def excerpt(text: object, limit: int = EXCERPT_CHARS) -> str:
    """`text` quoted safely: printable ASCII only (others as ?), cut to `limit` characters."""
    clean = "".join(char if " " <= char <= "~" else "?" for char in str(text)[: limit + 1])
    return repr(clean[:limit] + ("..." if len(clean) > limit else ""))


def redact_paths(value: Any) -> Any:
    """`value` (text or JSON) with every path-like string replaced by <path>."""
    if isinstance(value, str):
        return _PATH.sub("<path>", value)
    if isinstance(value, dict):
        return {key: redact_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_paths(item) for item in value]
    return value
