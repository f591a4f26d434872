"""Concurrent writers and readers of one publication (jobs.storage.publish_dir), locally and on S3.

Each race is made deterministic by pausing one real publish at a chosen step (its upload done, its
marker not yet written) while the other runs whole; a reader checks every version it resolves is
whole (every file of it written by one publish). Nothing here is a stub: the files go to a real folder
or the local S3 server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from jobs import storage
from jobs.errors import BusnetError

REPO = Path(__file__).resolve().parents[1]
FILES = [f"part-{i}.bin" for i in range(6)]


def _source(root: Path, token: bytes) -> Path:
    for name in FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(token * 100)
    return root


def _whole(uri: str) -> bytes:
    """The token of the version `uri` resolves to, after checking every file holds it (one publish)."""
    version = storage.resolve(uri)
    tokens = {storage.read_bytes(storage.join(version, name)) for name in FILES}
    assert len(tokens) == 1, f"{version} mixes publications"
    return tokens.pop()[:1]


def _root(where: str, tmp_path: Path, request) -> str:
    return request.getfixturevalue("s3_bucket") if where == "s3" else str(tmp_path / "store")


def _paused_after_upload(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """(uploaded, go): the next publish in another thread sets `uploaded` once its files are up and
    waits for `go` before writing its marker."""
    uploaded, go = threading.Event(), threading.Event()
    copy_files = pafs.copy_files
    owner: list[int] = []

    def copy_then_wait(*args, **kwargs):
        copy_files(*args, **kwargs)
        if not owner or owner[0] == threading.get_ident():
            owner.append(threading.get_ident())
            uploaded.set()
            assert go.wait(60)

    monkeypatch.setattr(pafs, "copy_files", copy_then_wait)
    return uploaded, go


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_publishers_at_once_keep_each_others_versions(where, tmp_path, request, monkeypatch):
    """A starts, B publishes whole while A uploads, A finishes: before, B deleted A's unfinished
    version, and A then failed ("not found", locally) or pointed the pointer at a version holding only
    its marker (S3). Now both versions stay whole and the pointer names one of them."""
    uri = storage.join(_root(where, tmp_path, request), "data")
    storage.publish_dir(_source(tmp_path / "v0", b"0"), uri)
    uploaded, go = _paused_after_upload(monkeypatch)
    results: dict[str, object] = {}

    def publish_a() -> None:
        try:
            results["a"] = storage.publish_dir(_source(tmp_path / "a", b"a"), uri)
        except Exception as exc:  # reported below
            results["a"] = exc

    writer = threading.Thread(target=publish_a)
    writer.start()
    assert uploaded.wait(60)
    results["b"] = storage.publish_dir(_source(tmp_path / "b", b"b"), uri)  # B runs whole meanwhile
    assert _whole(uri) == b"b"
    go.set()
    writer.join(60)
    assert isinstance(results["a"], str), results["a"]
    assert _whole(uri) == b"a"  # the last pointer written wins, and it names a whole version
    for token in ("a", "b"):  # nothing a finished publish wrote is lost
        assert {storage.read_bytes(storage.join(results[token], n)) for n in FILES} == {token.encode() * 100}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_reader_during_publishes_always_sees_one_whole_version(where, tmp_path, request):
    uri = storage.join(_root(where, tmp_path, request), "data")
    storage.publish_dir(_source(tmp_path / "v0", b"0"), uri)
    done, seen, errors = threading.Event(), set(), []

    def read() -> None:
        while not done.is_set():
            try:
                seen.add(_whole(uri))
            except Exception as exc:  # a version replaced and pruned under the reader is not one
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for token in (b"1", b"2", b"3"):
        storage.publish_dir(_source(tmp_path / token.decode(), token), uri, keep=None)
    done.set()
    reader.join(60)
    assert not errors and seen <= {b"0", b"1", b"2", b"3"} and _whole(uri) == b"3"


def test_the_pointer_moves_only_to_a_version_whose_files_are_whole(tmp_path, monkeypatch):
    """Fast guard of the order: when the pointer is written, the version's files are all there."""
    uri = str(tmp_path / "data")
    write_whole = storage._write_whole
    checked = []

    def spy(fs, path: str, data: bytes) -> None:
        if path == f"{uri}/_COMPLETE":
            version = f"{uri}/{data.decode()}"
            assert sorted(p.rsplit("/", 1)[1] for p in storage.list_files(version)) == sorted([*FILES, "_COMPLETE"])
            marker = json.loads(Path(version, "_COMPLETE").read_text())
            assert marker["files"] == dict.fromkeys(FILES, 100)
            checked.append(version)
        write_whole(fs, path, data)

    monkeypatch.setattr(storage, "_write_whole", spy)
    storage.publish_dir(_source(tmp_path / "a", b"a"), uri)
    assert len(checked) == 1


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_version_emptied_before_the_swap_is_not_pointed_at(where, tmp_path, request, monkeypatch):
    """The marker lists the version's files and is checked before the pointer moves: a file lost
    meanwhile (here deleted by someone else) stops the publish; the old version stays current."""
    uri = storage.join(_root(where, tmp_path, request), "data")
    storage.publish_dir(_source(tmp_path / "v0", b"0"), uri)
    write_whole = storage._write_whole

    def lose_a_file(fs, path: str, data: bytes) -> None:
        write_whole(fs, path, data)
        if path.endswith(f"/versions/{path.split('/versions/')[-1].split('/')[0]}/_COMPLETE"):
            fs.delete_file(path.rsplit("/", 1)[0] + "/" + FILES[0])

    monkeypatch.setattr(storage, "_write_whole", lose_a_file)
    with pytest.raises(BusnetError, match="its files no longer match its marker; the pointer was not moved"):
        storage.publish_dir(_source(tmp_path / "a", b"a"), uri)
    assert _whole(uri) == b"0"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_publisher_killed_mid_way_leaves_one_whole_version(where, tmp_path, request):
    """SIGKILL half-way through the upload: readers get the old version; the next publish completes
    and, the killed upload's lease still running, leaves it alone (it could be a live writer's)."""
    uri = storage.join(_root(where, tmp_path, request), "data")
    storage.publish_dir(_source(tmp_path / "v0", b"0"), uri)
    code = (
        "from tests.faults import die_mid_publish; die_mid_publish(); from jobs import storage; "
        f"storage.publish_dir({str(_source(tmp_path / 'k', b'k'))!r}, {uri!r})"
    )
    killed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert _whole(uri) == b"0" and [done for _, done in storage.versions(uri)] == [True, False]
    storage.publish_dir(_source(tmp_path / "v1", b"1"), uri)
    assert _whole(uri) == b"1" and [done for _, done in storage.versions(uri)] == [True, False, True]


def _named(hours_ago: float) -> str:
    started = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
    return f"v-{started:%Y%m%dT%H%M%S}-{started:%f}-0000"


def test_an_unfinished_version_is_pruned_once_its_24_hour_lease_is_over(tmp_path):
    """The lease pinned as a number: an upload of 23 h may still be running, one of 25 h is not."""
    uri, stale, fresh = str(tmp_path / "data"), _named(25), _named(23)
    for name, token in ((stale, b"x"), (fresh, b"y")):
        _source(tmp_path / "data" / "versions" / name, token)
    storage.publish_dir(_source(tmp_path / "a", b"a"), uri)
    assert [n for n, done in storage.versions(uri) if not done] == [fresh]


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("inside", ["versions/v-20260101T000000-000000-abcd", "versions/v-x/sub"])
def test_publishing_into_a_version_folder_is_refused(where, inside, tmp_path, request):
    """Before, `--out data/versions/v-X` was accepted, and the next publish to `data` broke it."""
    uri = storage.join(_root(where, tmp_path, request), "data")
    first = storage.publish_dir(_source(tmp_path / "v0", b"0"), uri)
    with pytest.raises(BusnetError, match="refusing to publish into a version folder"):
        storage.publish_dir(_source(tmp_path / "a", b"a"), storage.join(uri, inside))
    with pytest.raises(BusnetError, match="refusing to publish into a version folder"):
        storage.publish_dir(_source(tmp_path / "a", b"a"), first)
    storage.publish_dir(_source(tmp_path / "v1", b"1"), uri)
    assert _whole(uri) == b"1"


def test_ingest_into_a_version_folder_is_refused_before_any_work(synthetic_dataset, tmp_path, capsys):
    from jobs.cli import main

    raw = Path(synthetic_dataset).parent / "raw"
    target = storage.resolve(synthetic_dataset)  # .../dataset/versions/v-...
    before = storage.list_files(synthetic_dataset)
    assert main(["ingest", "--source", f"synthetic={raw}", "--out", target]) == 1
    assert "refusing to publish into a version folder" in capsys.readouterr().err
    assert storage.list_files(synthetic_dataset) == before
