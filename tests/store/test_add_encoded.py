"""``Collection.add_encoded``: files encoded elsewhere (Spark tasks) commit as ``add`` commits them."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from vidsearch import Collection
from vidsearch.collection import KNOWN, EncodedFile
from vidsearch.errors import ShapeError


@pytest.fixture(scope="module")
def encoded(small_refs):
    from vidsearch.config import CollectionConfig
    from vidsearch.encode.pipeline import MediaEncoder

    path = small_refs[2]
    media = MediaEncoder(CollectionConfig()).encode_file(path)
    return EncodedFile(str(path), hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size, media)


def test_an_encoded_file_commits_as_add_would(tmp_path, encoded, built_collection):
    with Collection.create(tmp_path / "c") as coll:
        reports = coll.add_encoded([encoded, encoded, EncodedFile("/x/broken.mp4", None, 0, error="cannot decode")])
        assert [r.status for r in reports] == ["indexed", "skipped", "failed"]
        assert reports[2].error == "cannot decode" and reports[1].video_id == reports[0].video_id
        with Collection.open(built_collection) as ref:
            assert reports[0].video_id in {v["id"] for v in ref.videos()}  # the id add gave the same file
            _, want = ref.frame_vectors(reports[0].video_id)
        _, got = coll.frame_vectors(reports[0].video_id)
        np.testing.assert_array_equal(got, want)


def test_vectors_of_another_width_are_refused(tmp_path, encoded):
    media = dataclasses.replace(encoded.media, segment_vectors=encoded.media.segment_vectors[:, :100])
    with Collection.create(tmp_path / "c") as coll, pytest.raises(ShapeError, match="collection's config"):
        coll.add_encoded([dataclasses.replace(encoded, media=media)])
    with Collection.open(tmp_path / "c") as coll:
        assert coll.videos() == []


def test_a_known_content_removed_meanwhile_is_reported_not_committed(tmp_path, encoded):
    with Collection.create(tmp_path / "c") as coll:
        (report,) = coll.add_encoded([dataclasses.replace(encoded, media=KNOWN)])
        assert report.status == "failed" and "removed" in (report.error or "")
        assert coll.videos() == []
