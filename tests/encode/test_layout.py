"""Inset detection on real footage composited the way picture-in-picture and split screens are made."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidsearch.encode.layout import Inset, detect_insets
from vidsearch.evaluate import edits


@pytest.fixture(scope="module")
def frames(footage):
    host, _ = edits.decode_rgb(footage["bikes.mp4"], 1.0, 1.3, max_width=640, max_fps=5)
    inner, _ = edits.decode_rgb(footage["iscc/demo.mp4"], 20.0, 20.3, max_width=640, max_fps=5)
    return np.asarray(host[0]), np.asarray(inner[0])


def _paste(host: np.ndarray, inner: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    canvas = Image.fromarray(host)
    canvas.paste(Image.fromarray(inner).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR), (x0, y0))
    return np.asarray(canvas)


def _iou(a: Inset, box: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a.right, box[2]) - max(a.left, box[0]))
    iy = max(0.0, min(a.bottom, box[3]) - max(a.top, box[1]))
    inter = ix * iy
    return inter / ((a.right - a.left) * (a.bottom - a.top) + (box[2] - box[0]) * (box[3] - box[1]) - inter)


@pytest.mark.parametrize("where", [(0.05, 0.1, 0.45, 0.5), (0.5, 0.45, 0.9, 0.85), (0.3, 0.0, 0.7, 0.4)])
def test_picture_in_picture_is_found_where_it_is(frames, where):
    host, inner = frames
    h, w = host.shape[:2]
    box = (int(where[0] * w), int(where[1] * h), int(where[2] * w), int(where[3] * h))
    found = detect_insets(_paste(host, inner, box))
    truth = (box[0] / w, box[1] / h, box[2] / w, box[3] / h)
    assert found, "no inset found"
    assert max(_iou(f, truth) for f in found) > 0.8  # a pixel of the ~160-px working image is ~1.5 % of a side


def test_letterboxed_copy_in_one_half_of_a_split_screen(frames):
    host, inner = frames
    inner = inner[inner.shape[0] // 4 : 3 * inner.shape[0] // 4]  # a wide picture, as a 16:9 copy in a half
    h, w = host.shape[:2]
    half = np.zeros((h, w // 2, 3), np.uint8)  # the copy scaled into the left half, black bars above and below
    ch = int(inner.shape[0] * (w // 2) / inner.shape[1])
    top = (h - ch) // 2
    half[top : top + ch] = np.asarray(Image.fromarray(inner).resize((w // 2, ch), Image.Resampling.BILINEAR))
    right = np.asarray(Image.fromarray(host).resize((w - w // 2, h), Image.Resampling.BILINEAR))
    found = detect_insets(np.concatenate([half, right], axis=1))
    assert found
    assert max(_iou(f, (0.0, top / h, (w // 2) / w, (top + ch) / h)) for f in found) > 0.85


def test_a_plain_frame_and_a_tiny_one_have_no_inset(frames):
    assert detect_insets(np.full((180, 320, 3), 90, np.uint8)) == []
    assert detect_insets(np.zeros((6, 6, 3), np.uint8)) == []
    host, _ = frames
    # the host frame alone: whatever it finds, never the whole frame and never more than two boxes
    found = detect_insets(host)
    assert len(found) <= 2 and all((f.right - f.left) * (f.bottom - f.top) <= 0.6 for f in found)
