"""Files behind storage URIs for models/ (which may not import jobs or ray): a path, file:// or s3://.

fsspec (s3fs for s3://) is imported only when a URI has a remote scheme. s3fs reads the standard
AWS environment variables, AWS_ENDPOINT_URL included, so MinIO or a local S3 server need no code.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse


def is_remote(uri: str) -> bool:
    return urlparse(str(uri)).scheme not in ("", "file")


def local_path(uri: str) -> Path:
    """The local path of a plain path or file:// URI."""
    uri = str(uri)
    return Path(urlparse(uri).path if uri.startswith("file://") else uri).expanduser()


def join(uri: str, name: str) -> str:
    return f"{str(uri).rstrip('/')}/{name}"


def copy_to_local(uri: str, destination: Path) -> None:
    """Stream the file at a remote URI to a local file; FileNotFoundError when it does not exist."""
    import fsspec

    filesystem, path = fsspec.core.url_to_fs(uri)
    filesystem.get_file(path, str(destination))
