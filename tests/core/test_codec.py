"""VAE encode/decode: streamed chunks equal the VAE's own encode/decode, normalization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wanctl.core.models.codec import decode_latents, denormalize, encode_frames, normalize, to_pixels
from wanctl.toy.shapes import example_clip, render


@pytest.fixture(scope="module")
def frames():
    return list(render(example_clip(width=64, height=64, frames=9)))


@pytest.mark.parametrize("name", ["tiny-ti2v-5b", "tiny-t2v-a14b"])
def test_streamed_encode_equals_vae_encode(bundles, frames, name):
    vae = bundles(name).vae()
    ours = encode_frames(vae, frames)
    with torch.inference_mode():
        ref = normalize(vae.encode(to_pixels(frames)).latent_dist.mode(), vae)
    assert ours.shape == ref.shape == (1, vae.config.z_dim, 3, 64 // vae.config.scale_factor_spatial, 64 // vae.config.scale_factor_spatial)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-ti2v-5b", "tiny-t2v-a14b"])
def test_streamed_decode_equals_vae_decode(bundles, frames, name):
    vae = bundles(name).vae()
    z = encode_frames(vae, frames)
    ours = np.stack(list(decode_latents(vae, z)))
    with torch.inference_mode():
        ref = vae.decode(denormalize(z, vae)).sample[0]
    ref = ((ref.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
    assert ours.shape == (9, 64, 64, 3)
    assert np.array_equal(ours, ref)


def test_normalization_round_trip(bundles):
    vae = bundles("tiny-ti2v-5b").vae()
    z = torch.randn(1, 48, 2, 3, 3)
    torch.testing.assert_close(denormalize(normalize(z, vae), vae), z)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(normalize(z, vae), (z - mean) / std)


def test_first_latent_frame_depends_on_first_frame_only(bundles, frames):
    """The causal VAE encodes frame 0 alone: conditional inversion relies on this."""
    vae = bundles("tiny-ti2v-5b").vae()
    whole = encode_frames(vae, frames)
    first = encode_frames(vae, frames[:1])
    torch.testing.assert_close(whole[:, :, :1], first, rtol=0, atol=1e-6)


def test_tiled_path_runs(bundles, frames):
    from wanctl.core.models.bundle import LoadOptions, ModelBundle

    b = bundles("tiny-t2v-a14b")
    tiled = ModelBundle(b.spec, LoadOptions(device="cpu", vae_tiling=True))
    vae = tiled.vae()
    vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16, tile_sample_stride_width=16)
    z = encode_frames(vae, frames)
    assert z.shape == (1, 16, 3, 8, 8)
    out = list(decode_latents(vae, z))
    assert len(out) == 9 and out[0].shape == (64, 64, 3)
