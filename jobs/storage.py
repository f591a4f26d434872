"""Storage URIs: `/path`, `file:///path` and `s3://bucket/prefix`: the one module that resolves them.

Every stage (ingest, train, tune, evaluate, serve) and models/ (checkpoints, pretrained weights) read
and write through here; nothing else parses a URI or opens S3. It is the lowest layer, beside
jobs.errors: it imports nothing else of busnet, and neither torch nor Ray (pyarrow.fs only).

S3 (AWS, MinIO, any S3-compatible store) is configured only by the standard AWS environment
variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_DEFAULT_REGION and
AWS_ENDPOINT_URL (e.g. http://127.0.0.1:9000 for MinIO).

One S3 client stack: pyarrow's own S3 filesystem (pyarrow.fs, the AWS C++ SDK), not s3fs/fsspec.
- Ray Data's read_parquet and Ray Train/Tune's RunConfig(storage_filesystem=...) take a pyarrow
  filesystem. s3fs could reach them only wrapped in pyarrow.fs.PyFileSystem(FSSpecHandler(...)):
  every read through Python and s3fs's own event loop (aiobotocore) in each worker.
- Measured on the tests' local S3 server (moto, 2 cores): 16 Parquet shards (64 MB) read by
  pyarrow.parquet in 0.72 s through pyarrow's S3, 5.1 s through s3fs; one 100 MB object read
  whole in 0.85 s, 5.4-8.2 s through s3fs.
- pyarrow is needed for Parquet anyway, so s3fs is no dependency of busnet any more.
pyarrow sends one ranged GET per read call, so a whole object is read with one call
(`open_input_file().read()`) and copies go in 64 MiB chunks: reading that 100 MB object from a
stream in pyarrow's default pieces took 97 s (hundreds of GETs), copy_files' default 1 MiB 31 s.

A directory "publishes" atomically for readers, the same way locally and on S3 (which has no rename):

    <uri>/_COMPLETE                  the pointer: "versions/<version>", written last, in one piece
    <uri>/versions/<version>/...     each publication in its own folder, never changed afterwards
    <uri>/versions/<version>/_COMPLETE   written after the version's files: JSON naming its writer
                                         and listing each file with its size

A new version is uploaded whole beside the current one; its marker's list is checked against what the
store holds, and only then does the pointer swap to it, so readers (`resolve`, once per load) get the
old version or the new one, never half of one, and a publish that dies leaves the old one served.
Several writers may publish to one URI at once (the last pointer written wins): a writer deletes only
complete versions older than its own beyond `keep` (never the one the pointer names), and an
unfinished version only once its lease (LEASE, counted from the time in its name) has run out, so it
never deletes a version another writer is still uploading. A version folder is no publishing target.
A publication from before versions (its files beside an empty `_COMPLETE`) still reads as before.
Busnet replaces only its own publications: `publish_dir` refuses a bucket root and a folder holding
anything without that marker, so a typo in `--out` cannot delete a user's data.

Failures of the store (missing bucket, access denied, unreachable endpoint, not found) become one
BusnetError line that says what to fix (`_explain`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from jobs.errors import BusnetError

COMPLETE_MARKER = "_COMPLETE"
VERSIONS_DIR = "versions"
COPY_CHUNK = 64 << 20  # bytes per ranged GET when copying (see the module doc)
# An unfinished version younger than this may still be uploading (another writer): not pruned. A day
# outlasts any upload busnet makes (the largest public dataset, ~10 GB, uploads in minutes).
LEASE = timedelta(hours=24)
VERSION_NAME = re.compile(r"v-(\d{8}T\d{6})-(\d{6})-[0-9a-f]{4}")


def is_remote(uri: str) -> bool:
    return urlparse(str(uri)).scheme not in ("", "file")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a storage URI; raises BusnetError on a bad URI."""
    uri = str(uri)
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme == "file" else uri
        if not path:
            raise BusnetError(f"empty path in storage URI {uri!r}")
        return pafs.LocalFileSystem(), str(Path(path).expanduser().absolute())
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise BusnetError(f"no bucket in storage URI {uri!r} (expected s3://bucket/prefix)")
        return s3_filesystem(), f"{parsed.netloc}{parsed.path}".rstrip("/")
    raise BusnetError(f"unsupported storage URI {uri!r}: use a path, file:///path or s3://bucket/prefix")


def local_path(uri: str | Path) -> Path:
    """The absolute local path of a plain path or file:// URI; BusnetError for a remote one."""
    if is_remote(uri):
        raise BusnetError(f"{uri}: a local path or file:// URI is needed here")
    return Path(filesystem(uri)[1])


def s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow S3 filesystem from the standard AWS environment variables."""
    options: dict = {"region": os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"}
    endpoint = s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint)
        if not parsed.netloc:
            raise BusnetError(f"AWS_ENDPOINT_URL={endpoint!r} is not a URL like http://host:port")
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        options.update(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            session_token=os.environ.get("AWS_SESSION_TOKEN"),
        )
    options.update(
        connect_timeout=5, request_timeout=30, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3)
    )
    return pafs.S3FileSystem(**options)


def s3_endpoint() -> str | None:
    """The S3 endpoint URL from the environment (None: AWS's own)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def join(uri: str, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *(p.strip("/") for p in parts)])


def _explain(uri: str, exc: Exception) -> BusnetError:
    """Turn pyarrow/AWS errors into a one-line message that says what to fix."""
    text = str(exc)
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text or "To create buckets" in text:
        return BusnetError(f"{uri}: the bucket does not exist (create it first)")
    if any(k in text for k in ("ACCESS_DENIED", "INVALID_ACCESS_KEY", "SIGNATURE_DOES_NOT_MATCH", "403")):
        return BusnetError(f"{uri}: access denied; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    if any(k in text for k in ("NETWORK_CONNECTION", "Couldn't connect", "curlCode: 7", "Connection refused")):
        endpoint = s3_endpoint() or "(the AWS default; set AWS_ENDPOINT_URL for MinIO and others)"
        return BusnetError(f"{uri}: cannot reach the S3 endpoint {endpoint}")
    if isinstance(exc, FileNotFoundError):
        return BusnetError(f"{uri}: not found")
    return BusnetError(f"{uri}: {text.splitlines()[0] if text else type(exc).__name__}")


def read_bytes(uri: str) -> bytes:
    """The whole file, with one GET (see the module doc)."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_file(path) as handle:
            return handle.read()
    except OSError as exc:
        raise _explain(uri, exc) from exc


def download_file(uri: str, destination: str | Path) -> Path:
    """Copy one file to a local path (its folder is created), in COPY_CHUNK pieces; returns the path."""
    fs, path = filesystem(uri)
    destination = Path(destination).absolute()
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            raise FileNotFoundError(path)
        pafs.copy_files(
            path,
            str(destination),
            source_filesystem=fs,
            destination_filesystem=pafs.LocalFileSystem(),
            chunk_size=COPY_CHUNK,
        )
    except OSError as exc:
        raise _explain(uri, exc) from exc
    return destination


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(data)
    except OSError as exc:
        raise _explain(uri, exc) from exc


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise _explain(uri, exc) from exc


def is_file(uri: str) -> bool:
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path).type == pafs.FileType.File
    except OSError as exc:
        raise _explain(uri, exc) from exc


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Paths (inside the filesystem) of the files under a directory URI, sorted."""
    fs, path = filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise _explain(uri, exc) from exc
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Copy a directory URI to a local folder (a no-op copy for local URIs is still a copy)."""
    fs, path = filesystem(uri)
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        if fs.get_file_info(path).type != pafs.FileType.Directory:
            raise BusnetError(f"{uri}: not a directory")
        pafs.copy_files(
            path,
            str(local_dir.absolute()),
            source_filesystem=fs,
            destination_filesystem=pafs.LocalFileSystem(),
            chunk_size=COPY_CHUNK,
        )
    except OSError as exc:
        raise _explain(uri, exc) from exc
    return local_dir


@contextmanager
def local_dir_for(uri: str) -> Iterator[Path]:
    """A local folder holding the directory URI for the `with` block: itself when local, else a
    download that is removed when the block ends."""
    if not is_remote(uri):
        path = local_path(uri)
        if not path.is_dir():
            raise BusnetError(f"{uri}: not a directory")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="busnet-") as local:
        yield download_dir(uri, local)


def publish_dir(local_dir: str | Path, uri: str, *, keep: int | None = 2) -> str:
    """Publish a copy of `local_dir` as a new version of `uri` and make it the current one; returns
    the version's URI. `keep`: how many complete versions stay (None: all, as for checkpoints); the
    default 2 keeps the one replaced, which a reader that resolved `uri` just before may still read.

    Staged write + marker swap (see the module doc): the version is written whole, its own marker
    last, and only then does `<uri>/_COMPLETE` point to it, so readers see the old version or the
    new one, never a mix. Refuses, before writing anything, a bucket root and a target that holds
    anything busnet did not publish.
    """
    fs, path = filesystem(uri)
    _refuse_foreign_target(fs, path, uri)
    version = f"{VERSIONS_DIR}/{new_version_name()}"
    try:
        fs.create_dir(f"{path}/{version}", recursive=True)
        pafs.copy_files(
            str(Path(local_dir).absolute()),
            f"{path}/{version}",
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=fs,
            chunk_size=COPY_CHUNK,
        )
        files = _listing(fs, f"{path}/{version}")
        if files != _listing(pafs.LocalFileSystem(), str(Path(local_dir).absolute())):
            raise BusnetError(f"{join(uri, version)}: the upload does not match {local_dir}; publish again")
        marker = {"writer": _writer(), "files": files}
        _write_whole(fs, f"{path}/{version}/{COMPLETE_MARKER}", json.dumps(marker, sort_keys=True).encode())
        _verify(fs, path, version, uri)
        _write_whole(fs, f"{path}/{COMPLETE_MARKER}", version.encode())  # the swap
        _prune(fs, path, version, keep)
    except OSError as exc:
        raise _explain(uri, exc) from exc
    return join(uri, version)


def _writer() -> str:
    """Who wrote a version (host and process), kept in its marker for whoever finds two writers."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _listing(fs: pafs.FileSystem, root: str) -> dict[str, int]:
    """{path relative to root: size} of every file under root but the marker."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    start = len(root.rstrip("/")) + 1
    return {i.path[start:]: i.size for i in infos if i.type == pafs.FileType.File and i.path[start:] != COMPLETE_MARKER}


def _verify(fs: pafs.FileSystem, path: str, version: str, uri: str) -> None:
    """The version's marker and files agree: checked just before the pointer moves to it, so the
    pointer never names a version that another writer (or anything else) emptied meanwhile."""
    try:
        with fs.open_input_file(f"{path}/{version}/{COMPLETE_MARKER}") as handle:
            listed = json.loads(handle.read())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BusnetError(f"{join(uri, version)}: its {COMPLETE_MARKER} marker is missing or unreadable") from exc
    if _listing(fs, f"{path}/{version}") != listed:
        raise BusnetError(f"{join(uri, version)}: its files no longer match its marker; the pointer was not moved")


def check_publishable(uri: str) -> None:
    """BusnetError now, before any work, when publish_dir would refuse `uri` (its checks, unchanged)."""
    fs, path = filesystem(uri)
    _refuse_foreign_target(fs, path, uri)


def new_version_name() -> str:
    """`v-<UTC second>-<microsecond>-<random>`: fixed width, so names sort in publication order."""
    now = datetime.now(timezone.utc)
    return f"v-{now:%Y%m%dT%H%M%S}-{now:%f}-{uuid.uuid4().hex[:4]}"


def point_to(uri: str, version: str) -> str:
    """Make `version` (a complete folder under `<uri>/versions/`) the current one: the pointer swap of
    `publish_dir` alone, so promoting or rolling back deletes and copies nothing. Returns its URI."""
    uri = str(uri).rstrip("/")
    target = f"{VERSIONS_DIR}/{version}"
    if (version, True) not in versions(uri):
        known = ", ".join(name for name, complete in versions(uri) if complete) or "none"
        raise BusnetError(f"{uri}: no complete version {version!r} (complete versions: {known})")
    fs, path = filesystem(uri)
    try:
        _write_whole(fs, f"{path}/{COMPLETE_MARKER}", target.encode())
    except OSError as exc:
        raise _explain(uri, exc) from exc
    return join(uri, target)


def resolve(uri: str) -> str:
    """The folder holding a publication's files: the version `<uri>/_COMPLETE` points to, else `uri`
    itself (a publication from before versions, a version folder, or no publication at all).

    Read once per load and then only the returned folder, so a reader never mixes two versions.
    """
    uri = str(uri).rstrip("/")
    fs, path = filesystem(uri)
    try:
        with fs.open_input_file(f"{path}/{COMPLETE_MARKER}") as handle:
            pointer = handle.read().decode(errors="replace").strip()
    except FileNotFoundError:
        if versions(uri):
            raise BusnetError(
                f"{uri}: no complete version yet (a first publication was interrupted: publish again)"
            ) from None
        return uri
    except OSError as exc:
        raise _explain(uri, exc) from exc
    if not pointer or pointer.startswith("{"):  # a publication from before versions, or a version's own marker
        return uri
    if not re.fullmatch(rf"{VERSIONS_DIR}/v-[0-9A-Za-z-]+", pointer):
        raise BusnetError(f"{join(uri, COMPLETE_MARKER)}: not a busnet version pointer ({pointer[:60]!r})")
    if not is_complete(join(uri, pointer)):
        raise BusnetError(f"{uri}: its current version {pointer} is incomplete or missing (re-publish it)")
    return join(uri, pointer)


def versions(uri: str) -> list[tuple[str, bool]]:
    """(name, complete) of every version folder of a publication, oldest first."""
    fs, path = filesystem(uri)
    try:
        return _versions(fs, path)
    except OSError as exc:
        raise _explain(uri, exc) from exc


def _versions(fs: pafs.FileSystem, path: str) -> list[tuple[str, bool]]:
    infos = fs.get_file_info(pafs.FileSelector(f"{path}/{VERSIONS_DIR}", allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
    return [(n, _is_file(fs, f"{path}/{VERSIONS_DIR}/{n}/{COMPLETE_MARKER}")) for n in names]


def _refuse_foreign_target(fs: pafs.FileSystem, path: str, uri: str) -> None:
    """Busnet replaces only what it published: a folder with a `_COMPLETE` marker, or one holding
    nothing but version folders (a first publication that was interrupted)."""
    if _in_a_version(path):
        raise BusnetError(
            f"{uri}: refusing to publish into a version folder (versions are never changed); "
            "name the publication itself, the folder above versions/"
        )
    if is_remote(uri) and "/" not in path:
        raise BusnetError(f"{uri}: refusing to publish to a bucket root; name a folder in it, e.g. {path}/datasets/x")
    if not is_remote(uri) and Path(path).parent == Path(path):
        raise BusnetError(f"{uri}: refusing to publish to the filesystem root; name a folder")
    try:
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound or _is_file(fs, f"{path}/{COMPLETE_MARKER}"):
            return
        if kind == pafs.FileType.File:
            raise BusnetError(f"{uri}: refusing to publish here: it is a file (choose a new or empty folder)")
        entries = fs.get_file_info(pafs.FileSelector(path))
        foreign = sorted(  # all but versions/ and a pointer being written aside (_write_whole)
            e.base_name
            for e in entries
            if e.base_name != VERSIONS_DIR and not e.base_name.startswith(f"{COMPLETE_MARKER}.")
        )
        if VERSIONS_DIR in {e.base_name for e in entries}:
            inside = fs.get_file_info(pafs.FileSelector(f"{path}/{VERSIONS_DIR}"))
            foreign += [
                f"{VERSIONS_DIR}/{e.base_name}"
                for e in inside
                if e.type != pafs.FileType.Directory or not e.base_name.startswith("v-")
            ]
    except OSError as exc:
        raise _explain(uri, exc) from exc
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise BusnetError(
            f"{uri}: refusing to publish here: it holds {shown}, and no {COMPLETE_MARKER} marker says busnet "
            "published it; busnet replaces only its own publications (choose a new or empty folder)"
        )


def _in_a_version(path: str) -> bool:
    """Whether a path is a published version folder or inside one (`.../versions/v-...`)."""
    parts = path.split("/")
    return any(a == VERSIONS_DIR and b.startswith("v-") for a, b in zip(parts, parts[1:]))


def _prune(fs: pafs.FileSystem, path: str, current: str, keep: int | None) -> None:
    """Delete what is no longer served: complete versions older than ours beyond `keep`, unfinished
    ones whose lease ran out, and the files of a publication from before versions once `keep`
    versions replace it. Never the version the pointer names now (another writer may have moved it)
    nor any younger than ours, so concurrent writers never delete each other's work."""
    found = _versions(fs, path)
    mine = current.rsplit("/", 1)[1]
    complete = [f"{VERSIONS_DIR}/{name}" for name, done in found if done and name <= mine]
    doomed = [f"{VERSIONS_DIR}/{name}" for name, done in found if not done and _lease_over(name)]
    if keep is not None:
        doomed += [v for v in complete[:-keep] if v != current]
        if len(complete) >= keep:  # the flat files of a publication from before versions
            entries = fs.get_file_info(pafs.FileSelector(path))
            doomed += [
                e.base_name
                for e in entries
                if e.base_name not in (VERSIONS_DIR, COMPLETE_MARKER)
                and not e.base_name.startswith(f"{COMPLETE_MARKER}.")  # another writer's pointer being written
            ]
    try:
        with fs.open_input_file(f"{path}/{COMPLETE_MARKER}") as handle:
            served = handle.read().decode(errors="replace").strip()
    except FileNotFoundError:
        served = ""
    for name in doomed:
        if name == served:
            continue
        kind = fs.get_file_info(f"{path}/{name}").type
        if kind == pafs.FileType.Directory:
            fs.delete_dir(f"{path}/{name}")
        elif kind == pafs.FileType.File:
            fs.delete_file(f"{path}/{name}")


def _lease_over(name: str) -> bool:
    """Whether an unfinished version is old enough (LEASE) that no writer is still uploading it."""
    found = VERSION_NAME.fullmatch(name)
    if not found:
        return False  # not a name busnet gives: left alone
    started = datetime.strptime("".join(found.groups()), "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc) - started > LEASE


def _write_whole(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a small file that readers see whole or not at all: locally written aside and renamed
    over (atomic); on S3 one PUT, which is atomic by itself."""
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as stream:
            stream.write(data)
        return
    aside = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open_output_stream(aside) as stream:
        stream.write(data)
    fs.move(aside, path)


def _is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def check_bucket(uri: str) -> None:
    """Fail early, in one line, when an s3:// URI's bucket is missing or the endpoint unreachable."""
    fs, path = filesystem(uri)
    if not is_remote(uri):
        return
    bucket = path.split("/", 1)[0]
    try:
        missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except OSError as exc:
        raise _explain(uri, exc) from exc
    if missing:
        raise BusnetError(f"{uri}: the bucket {bucket!r} does not exist (create it first)")


def is_complete(uri: str) -> bool:
    """True when a published directory is whole (its `_COMPLETE` marker exists)."""
    return exists(join(uri, COMPLETE_MARKER))
