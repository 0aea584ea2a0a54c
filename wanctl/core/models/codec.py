"""VAE encode / decode between pixel frames and normalized latents.

Latents handed to the DiT and stored in artifacts are normalized per channel with the VAE
config's ``latents_mean`` / ``latents_std``. Encoding uses the posterior mean.

Both directions stream through the causal VAE the way the VAE itself chunks time (frame 0
alone, then groups of 4 pixel frames per latent frame), reusing diffusers' own encoder/decoder
blocks and feature caches, so a long clip never has to sit in memory as one float tensor. The
streamed result equals ``vae.encode`` / ``vae.decode`` exactly (tested). With tiling enabled the
VAE's own tiled path is used instead, which needs the whole clip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


def _stats(vae, like: "torch.Tensor"):
    import torch

    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, z, 1, 1, 1)
    return mean.to(like.device), std.to(like.device)


def normalize(z: "torch.Tensor", vae) -> "torch.Tensor":
    mean, std = _stats(vae, z)
    return (z.float() - mean) / std


def denormalize(z: "torch.Tensor", vae) -> "torch.Tensor":
    mean, std = _stats(vae, z)
    return z.float() * std + mean


def to_pixels(frames: list["np.ndarray"] | "np.ndarray", device=None, dtype=None) -> "torch.Tensor":
    """uint8 frames (T, H, W, 3) -> (1, 3, T, H, W) in [-1, 1] (x / 255 * 2 - 1, as diffusers)."""
    import numpy as np
    import torch

    arr = np.stack(frames) if isinstance(frames, list) else frames
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device or "cpu")
    t = t.permute(3, 0, 1, 2).unsqueeze(0).float() / 255.0 * 2.0 - 1.0
    return t.to(dtype=dtype or torch.float32)


def from_pixels(x: "torch.Tensor") -> "np.ndarray":
    """(3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    x = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to("cpu").byte()
    return x.permute(1, 2, 3, 0).numpy()


def chunk_sizes(frames: int) -> list[int]:
    """Pixel frames per causal VAE chunk: 1, then groups of 4."""
    return [1] + [4] * ((frames - 1) // 4)


def encode_chunks(
    vae,
    chunks: Iterable[list["np.ndarray"]],
    progress: Callable[[int], None] | None = None,
) -> "torch.Tensor":
    """Encode uint8 frames given as causal chunks (1 frame, then 4s) into normalized latents
    (1, C, T, h, w), float32. Chunks are consumed as they arrive."""

    def as_pixels():
        for chunk in chunks:
            yield to_pixels(chunk)
            if progress:
                progress(len(chunk))

    return encode_pixel_chunks(vae, as_pixels())


def encode_pixel_chunks(vae, chunks: Iterable["torch.Tensor"]) -> "torch.Tensor":
    """Encode pixel chunks (1, 3, n, H, W) in [-1, 1] (n = 1, then 4s) into normalized latents."""
    import torch

    device, dtype = vae.device, vae.dtype
    with torch.inference_mode():
        if vae.use_tiling:
            parts = list(chunks)
            if not parts:
                raise ValueError("no frames to encode")
            mu = vae.encode(torch.cat(parts, dim=2).to(device, dtype)).latent_dist.mode()
            return normalize(mu, vae)
        from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

        vae.clear_cache()
        out = []
        try:
            for x in chunks:
                x = x.to(device, dtype)
                if vae.config.patch_size is not None:
                    x = patchify(x, patch_size=vae.config.patch_size)
                vae._enc_conv_idx = [0]
                h = vae.encoder(x, feat_cache=vae._enc_feat_map, feat_idx=vae._enc_conv_idx)
                # quant_conv is a 1x1x1 convolution: applying it per chunk equals applying it once
                h = vae.quant_conv(h)
                out.append(normalize(h[:, : vae.config.z_dim], vae))
        finally:
            vae.clear_cache()
        if not out:
            raise ValueError("no frames to encode")
        return torch.cat(out, dim=2)


def encode_frames(vae, frames: list["np.ndarray"], progress: Callable[[int], None] | None = None) -> "torch.Tensor":
    """Encode a list of 4n+1 uint8 frames (H, W, 3) into normalized latents."""
    chunks, i = [], 0
    for n in chunk_sizes(len(frames)):
        chunks.append(frames[i : i + n])
        i += n
    return encode_chunks(vae, chunks, progress)


def decode_latents(
    vae,
    latents: "torch.Tensor",
    progress: Callable[[int], None] | None = None,
) -> Iterator["np.ndarray"]:
    """Decode normalized latents (1, C, T, h, w) and yield uint8 frames (H, W, 3) as they come."""
    import torch

    if latents.shape[0] != 1:
        raise ValueError("decode_latents takes one video at a time")
    z = denormalize(latents.to(vae.device), vae).to(vae.dtype)
    with torch.inference_mode():
        if vae.use_tiling:
            video = vae.decode(z).sample[0]
            for f in from_pixels(video):
                yield f
            if progress:
                progress(latents.shape[2])
            return
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        vae.clear_cache()
        try:
            x = vae.post_quant_conv(z)
            for i in range(x.shape[2]):
                vae._conv_idx = [0]
                out = vae.decoder(
                    x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=(i == 0)
                )
                if vae.config.patch_size is not None:
                    out = unpatchify(out, patch_size=vae.config.patch_size)
                for f in from_pixels(out[0]):
                    yield f
                if progress:
                    progress(1)
        finally:
            vae.clear_cache()
