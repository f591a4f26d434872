"""Storage URIs (jobs.storage): local, file:// and s3:// on the local S3 server; clear errors."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from jobs import storage
from jobs.errors import BusnetError


def _folder(root, files: dict[str, bytes]):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _current(uri: str, name: str) -> bytes:
    return storage.read_bytes(storage.join(storage.resolve(uri), name))


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_local_publish_adds_versions_and_swaps_the_pointer(tmp_path, scheme):
    target = f"{scheme}{tmp_path / 'out'}"
    first = storage.publish_dir(_folder(tmp_path / "v1", {"a.txt": b"1", "sub/b.txt": b"1"}), target)
    assert storage.is_complete(target) and _current(target, "sub/b.txt") == b"1"
    assert (tmp_path / "out/_COMPLETE").read_text() == first.rsplit("/out/", 1)[1]  # versions/v-...
    second = storage.publish_dir(_folder(tmp_path / "v2", {"a.txt": b"2"}), target)
    assert _current(target, "a.txt") == b"2" and not storage.exists(storage.join(storage.resolve(target), "sub"))
    assert storage.read_bytes(storage.join(first, "sub/b.txt")) == b"1"  # the replaced one stays readable
    third = storage.publish_dir(_folder(tmp_path / "v3", {"a.txt": b"3"}), target)
    assert [name for name, _ in storage.versions(target)] == [second.rsplit("/", 1)[1], third.rsplit("/", 1)[1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "v1", "v2", "v3"]  # no staging leftovers
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_COMPLETE", "versions"]


def test_s3_publish_read_write_and_replace(s3_bucket, tmp_path):
    uri = f"{s3_bucket}/runs/x"
    storage.publish_dir(_folder(tmp_path / "v1", {"a.txt": b"1", "sub/b.txt": b"1"}), uri)
    assert storage.is_complete(uri) and _current(uri, "sub/b.txt") == b"1"
    second = storage.publish_dir(_folder(tmp_path / "v2", {"a.txt": b"2"}), uri, keep=1)
    version = second.split("/runs/x/", 1)[1]
    assert storage.list_files(uri) == [
        f"{s3_bucket[5:]}/runs/x/{n}" for n in ("_COMPLETE", f"{version}/_COMPLETE", f"{version}/a.txt")
    ]
    storage.write_bytes(f"{s3_bucket}/other/c.bin", b"xyz")
    assert storage.read_bytes(f"{s3_bucket}/other/c.bin") == b"xyz"
    with storage.local_dir_for(storage.resolve(uri)) as local:
        assert local.joinpath("a.txt").read_bytes() == b"2"
    assert not local.exists()  # the download is removed after the block


@pytest.mark.parametrize("where", ["local", "s3"])
def test_publishing_over_a_foreign_folder_is_refused_and_deletes_nothing(where, tmp_path, request):
    """`busnet ingest --out data` over a folder of raw images: refused in one line, every file kept."""
    root = request.getfixturevalue("s3_bucket") if where == "s3" else str(tmp_path / "store")
    target = storage.join(root, "data")
    for name in ("benign (1).png", "notes/readme.txt"):
        storage.write_bytes(storage.join(target, name), b"user data")
    with pytest.raises(
        BusnetError, match=r"data: refusing to publish here: it holds benign \(1\)\.png, notes, and no _COMPLETE"
    ):
        storage.publish_dir(_folder(tmp_path / "v1", {"a.txt": b"1"}), target)
    assert [p.rsplit("/data/", 1)[1] for p in storage.list_files(target)] == ["benign (1).png", "notes/readme.txt"]
    storage.write_bytes(storage.join(root, "file"), b"user data")
    with pytest.raises(BusnetError, match="refusing to publish here: it is a file"):
        storage.publish_dir(tmp_path / "v1", storage.join(root, "file"))


def test_an_interrupted_first_publication_is_replaced(tmp_path):
    """A folder holding only a version without its marker is busnet's own leftover: publishing goes on,
    and removes it once its lease is over (a younger one may be another writer's upload)."""
    target = tmp_path / "out"
    _folder(target / "versions" / "v-20200101T000000-000000-abcd", {"half.bin": b"1"})
    with pytest.raises(BusnetError, match="no complete version yet"):
        storage.resolve(str(target))
    storage.publish_dir(_folder(tmp_path / "v1", {"a.txt": b"1"}), str(target))
    assert _current(str(target), "a.txt") == b"1" and [done for _, done in storage.versions(str(target))] == [True]


def test_a_publication_from_before_versions_still_reads_and_is_replaced(tmp_path):
    target = _folder(tmp_path / "out", {"a.txt": b"0", "_COMPLETE": b""})
    assert storage.resolve(str(target)) == str(target) and _current(str(target), "a.txt") == b"0"
    storage.publish_dir(_folder(tmp_path / "v1", {"a.txt": b"1"}), str(target))
    assert _current(str(target), "a.txt") == b"1" and (target / "a.txt").exists()  # kept: it was just replaced
    storage.publish_dir(_folder(tmp_path / "v2", {"a.txt": b"2"}), str(target))
    assert _current(str(target), "a.txt") == b"2" and not (target / "a.txt").exists()


@pytest.mark.parametrize("suffix", ["", "/"])
def test_publishing_to_a_bucket_root_is_refused(s3_bucket, tmp_path, suffix):
    storage.write_bytes(f"{s3_bucket}/keep/me.txt", b"1")
    with pytest.raises(BusnetError, match="refusing to publish to a bucket root; name a folder in it"):
        storage.publish_dir(_folder(tmp_path / "v1", {"a.txt": b"1"}), s3_bucket + suffix)
    assert storage.list_files(s3_bucket) == [f"{s3_bucket[5:]}/keep/me.txt"]


def test_a_pointer_that_is_not_a_version_is_refused(tmp_path):
    target = _folder(tmp_path / "out", {"_COMPLETE": b"../../etc"})
    with pytest.raises(BusnetError, match="_COMPLETE: not a busnet version pointer"):
        storage.resolve(str(target))


def test_missing_bucket_is_named(s3_server, tmp_path):
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/data"
    with pytest.raises(BusnetError, match="bucket 'no-such-bucket-.*' does not exist"):
        storage.check_bucket(missing)
    with pytest.raises(BusnetError, match="bucket does not exist"):
        storage.publish_dir(_folder(tmp_path / "d", {"a": b"1"}), missing)
    with pytest.raises(BusnetError, match="bucket does not exist"):
        storage.write_bytes(f"{missing}/a", b"1")


def test_unreachable_endpoint_is_named(unreachable_endpoint, tmp_path):
    with pytest.raises(BusnetError, match=f"cannot reach the S3 endpoint {unreachable_endpoint}"):
        storage.check_bucket("s3://some-bucket/data")
    with pytest.raises(BusnetError, match="cannot reach the S3 endpoint"):
        storage.read_bytes("s3://some-bucket/data/manifest.json")
    with pytest.raises(BusnetError, match="cannot reach the S3 endpoint"):
        storage.download_file("s3://some-bucket/data/model.safetensors", tmp_path / "model.safetensors")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_download_file_and_is_file(where, tmp_path, request):
    root = request.getfixturevalue("s3_bucket") if where == "s3" else str(tmp_path / "store")
    storage.write_bytes(storage.join(root, "run/best/model.safetensors"), b"weights")
    assert storage.is_file(storage.join(root, "run/best/model.safetensors"))
    assert not storage.is_file(storage.join(root, "run/best/config.json"))
    copied = storage.download_file(storage.join(root, "run/best/model.safetensors"), tmp_path / "new/m.bin")
    assert copied == tmp_path / "new/m.bin" and copied.read_bytes() == b"weights"
    with pytest.raises(BusnetError, match=r"run/best/config\.json: not found"):
        storage.download_file(storage.join(root, "run/best/config.json"), tmp_path / "c.json")
    with pytest.raises(BusnetError, match=r"run/nothing: not found"):
        storage.read_bytes(storage.join(root, "run/nothing"))


def test_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.local_path("runs/x") == tmp_path / "runs/x"
    assert storage.local_path(f"file://{tmp_path}/a b") == tmp_path / "a b"
    assert storage.local_path(Path("~/x")) == Path.home() / "x"
    with pytest.raises(BusnetError, match="a local path or file:// URI is needed"):
        storage.local_path("s3://bucket/x")


def test_import_is_light():
    """The lowest layer (models/ use it too): neither torch nor Ray, nor anything of busnet but jobs.errors."""
    code = (
        "import sys, jobs.storage; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'models', 'serve', 'jobs')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['jobs', 'jobs.errors', 'jobs.storage']"


@pytest.mark.parametrize(
    "uri, message",
    [
        ("gs://bucket/x", "unsupported storage URI"),
        ("s3:///x", "no bucket"),
        ("", "empty path"),
    ],
)
def test_bad_uris(uri, message):
    with pytest.raises(BusnetError, match=message):
        storage.filesystem(uri)


def test_bad_endpoint_setting(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:9000")
    with pytest.raises(BusnetError, match="is not a URL"):
        storage.filesystem("s3://bucket/x")


def test_access_denied_is_explained(s3_server, s3_bucket, monkeypatch):
    """moto accepts any key, so the denial comes from a bucket policy that refuses everyone."""
    name = s3_bucket[5:]
    policy = (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*",'
        f'"Action":"s3:GetObject","Resource":"arn:aws:s3:::{name}/*"}}]}}'
    )
    client = boto3.client("s3", endpoint_url=s3_server)
    client.put_object(Bucket=name, Key="secret", Body=b"x")
    client.put_bucket_policy(Bucket=name, Policy=policy)
    try:
        storage.read_bytes(f"{s3_bucket}/secret")
    except BusnetError as exc:
        assert "access denied" in str(exc)
    else:
        pytest.skip("this moto version does not enforce bucket policies")
