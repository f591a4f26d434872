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
# A whole URI or absolute path, spaces included (a folder may be named after a patient), up to
# the ": " that ends a busnet error's subject, a quote, a bracket or the end of the line.
_WHOLE = re.compile(
    r"(?<![^\s'\"(\[{=])(?:[A-Za-z][A-Za-z0-9+.-]*://|~?/|[A-Za-z]:\\|\\\\)[^'\"\n()\[\]{}]*?(?=: |['\"\n()\[\]{}]|$)"
)
# Then any other run of non-space characters that holds a / or \: a relative path.
_PATH = re.compile(r"[^\s'\"(),;:\[\]{}]*[/\\][^\s'\"(),;:\[\]{}]*")
# A bucket named on its own (jobs.storage: "the bucket 'name' does not exist").
_BUCKET = re.compile(r"\bbucket '[^'\n]*'")


def excerpt(text: object, limit: int = EXCERPT_CHARS) -> str:
    """`text` quoted safely: printable ASCII only (others as ?), cut to `limit` characters."""
    clean = "".join(char if " " <= char <= "~" else "?" for char in str(text)[: limit + 1])
    return repr(clean[:limit] + ("..." if len(clean) > limit else ""))


def redact_paths(value: Any) -> Any:
    """`value` (text or JSON) with every path-like string replaced by <path>."""
    if isinstance(value, str):
        return _PATH.sub("<path>", _WHOLE.sub("<path>", _BUCKET.sub("bucket <bucket>", value)))
    if isinstance(value, dict):
        return {key: redact_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_paths(item) for item in value]
    return value
