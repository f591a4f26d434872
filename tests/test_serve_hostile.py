"""serve/ without Ray, against hostile input: the query string, what error text may show, overlay names.
(Over HTTP, the same refusals and the security headers are in tests/test_serve.py.)"""

from __future__ import annotations

import pytest

from jobs.commands.predict import overlay_names
from serve.body import BadRequest, frame_number, query_frame
from serve.public import redact_paths


@pytest.mark.parametrize("text", ["²", "١", "9" * 5000, "10000", "0", "-1", "+1", " 1", "1.0", "0x1", ""])
def test_a_frame_is_1_to_4_ascii_digits(text):
    with pytest.raises(BadRequest, match="expected a frame number") as info:
        frame_number(text)
    assert info.value.status == 400 and len(str(info.value)) < 120  # a 5,000-digit value is not echoed


def test_the_query_holds_at_most_one_frame_and_nothing_else():
    assert query_frame([]) is None and query_frame([("frame", "1200")]) == 1200
    with pytest.raises(BadRequest, match="unknown query parameter 'frames'"):
        query_frame([("frames", "1")])
    with pytest.raises(BadRequest, match="frame is given more than once"):
        query_frame([("frame", "1"), ("frame", "2")])


@pytest.mark.parametrize(
    "text, shown",
    [
        ("/mnt/Jane Doe Study/best/config.json: missing", "<path>: missing"),
        (
            "s3://acme-prod/Jane Doe/runs: the bucket 'acme-prod' does not exist",
            "<path>: the bucket <bucket> does not exist",
        ),
        ("file:///data/My Patient/ckpt", "<path>"),
        ("No such file: '/tmp/Jane Doe/config.json'", "No such file: '<path>'"),
        (r"C:\Users\Jane Doe\ckpt: missing", "<path>: missing"),
        ("runs/x/best: not found", "<path>: not found"),
        ("preset 'tiny' of 2 variants", "preset 'tiny' of 2 variants"),
    ],
)
def test_redaction_removes_whole_uris_and_bucket_names(text, shown):
    """Before: the words between a path's spaces ("Doe") and bucket names stayed in public errors."""
    assert redact_paths(text) == shown


def test_overlays_of_images_with_one_name_do_not_overwrite_each_other():
    """Before: a/x.png and b/x.png both wrote x.overlay.png."""
    names = overlay_names(["a/x.png", "b/x.png", "x.jpg", "y.png", "x-2.png"])
    assert names == {
        "a/x.png": "x.overlay.png",
        "b/x.png": "x-2.overlay.png",
        "x.jpg": "x-3.overlay.png",
        "y.png": "y.overlay.png",
        "x-2.png": "x-2-2.overlay.png",
    }
    assert len(set(names.values())) == len(names)
