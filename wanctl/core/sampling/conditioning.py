"""The one place that builds the DiT's conditioning per family.

* ti2v-5b, image mode: the first frame's clean latent is pinned into latent frame 0 before every
  model call; frame-0 tokens get timestep 0, the others t (a (batch, tokens) timestep).
* i2v-a14b: a pixel video [first, zeros..., (last)] is VAE-encoded (posterior mean, normalized)
  and concatenated with a 4-channel frame mask: model input = noisy latent (16) + mask (4) +
  encoded condition (16) = 36 channels, scalar t.
* t2v-a14b, and ti2v-5b in text mode: nothing besides text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from wanctl.core.errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from wanctl.core.models.bundle import ModelBundle


@dataclass
class Condition:
    """Per-batch conditioning beside text. ``pinned`` (ti2v) or ``concat`` (i2v) or neither."""

    pinned: "torch.Tensor | None" = None  # (B, C, 1, h, w) clean normalized latent of frame 0
    concat: "torch.Tensor | None" = None  # (B, 20, T, h, w): mask (4) + encoded condition (16)
    patch: tuple[int, int, int] = (1, 2, 2)

    @property
    def kind(self) -> str:
        return "pinned" if self.pinned is not None else "concat" if self.concat is not None else "text"

    def pin(self, x: "torch.Tensor") -> "torch.Tensor":
        """Replace latent frame 0 by the condition (ti2v); identity otherwise."""
        if self.pinned is None:
            return x
        import torch

        return torch.cat([self.pinned.to(x.dtype), x[:, :, 1:]], dim=2)

    def model_input(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        if self.concat is not None:
            return torch.cat([x, self.concat.to(x.dtype)], dim=1)
        return self.pin(x)

    def timestep(self, t: int, x: "torch.Tensor") -> "torch.Tensor":
        """Scalar t per batch element, or per token with 0 on frame-0 tokens (ti2v image mode)."""
        import torch

        b, _, f, h, w = x.shape
        if self.pinned is None:
            return torch.full((b,), t, dtype=torch.long, device=x.device)
        pt, ph, pw = self.patch
        per_frame = (h // ph) * (w // pw)
        ts = torch.full((b, (f // pt) * per_frame), t, dtype=torch.long, device=x.device)
        ts[:, :per_frame] = 0
        return ts

    def mask_velocity(self, v: "torch.Tensor") -> "torch.Tensor":
        """Zero the velocity of pinned frame 0, so any solver keeps it exactly where it is."""
        if self.pinned is None:
            return v
        v = v.clone()
        v[:, :, :1] = 0
        return v

    def select(self, index: Sequence[int] | slice) -> "Condition":
        pick = (lambda t: None if t is None else t[index])
        return Condition(pick(self.pinned), pick(self.concat), self.patch)

    def repeat(self, n: int) -> "Condition":
        rep = (lambda t: None if t is None else t.repeat(n, 1, 1, 1, 1))
        return Condition(rep(self.pinned), rep(self.concat), self.patch)

    def flip_time(self) -> "Condition":
        """The same condition with latent frames in reverse order (for time-reversed passes)."""
        import torch

        flip = (lambda t: None if t is None else torch.flip(t, dims=[2]))
        return Condition(flip(self.pinned), flip(self.concat), self.patch)

    def to(self, device) -> "Condition":
        mv = (lambda t: None if t is None else t.to(device))
        return Condition(mv(self.pinned), mv(self.concat), self.patch)

    @staticmethod
    def cat(conds: list["Condition"]) -> "Condition":
        import torch

        def join(ts):
            return None if ts[0] is None else torch.cat(ts, dim=0)

        return Condition(join([c.pinned for c in conds]), join([c.concat for c in conds]), conds[0].patch)


def i2v_mask(frames: int, latent_frames: int, h: int, w: int, first: bool, last: bool, batch: int = 1) -> "torch.Tensor":
    """(B, 4, T, h, w): 1 where a pixel frame is given; frame 0's mask repeated 4 times, then
    grouped by 4 pixel frames per latent frame."""
    import torch

    m = torch.zeros(batch, 1, frames, h, w)
    if first:
        m[:, :, 0] = 1
    if last:
        m[:, :, -1] = 1
    m = torch.cat([m[:, :, :1].repeat(1, 1, 4, 1, 1), m[:, :, 1:]], dim=2)
    return m.view(batch, latent_frames, 4, h, w).transpose(1, 2).contiguous()


def encode_condition_video(vae, first, last, frames: int, width: int, height: int) -> "torch.Tensor":
    """VAE-encode [first, zeros..., last] (zeros are mid-gray, 0 in [-1, 1]); normalized mean."""
    import torch

    from wanctl.core.models.codec import chunk_sizes, encode_pixel_chunks, to_pixels

    def frame(k: int) -> "torch.Tensor":
        if k == 0 and first is not None:
            return to_pixels([first])
        if k == frames - 1 and last is not None:
            return to_pixels([last])
        return torch.zeros(1, 3, 1, height, width)

    def chunks():
        i = 0
        for n in chunk_sizes(frames):
            yield torch.cat([frame(k) for k in range(i, i + n)], dim=2)
            i += n

    return encode_pixel_chunks(vae, chunks())


def build_condition(
    bundle: "ModelBundle",
    *,
    frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    first: "np.ndarray | None" = None,
    last: "np.ndarray | None" = None,
    first_latent: "torch.Tensor | None" = None,
) -> Condition:
    """Conditioning for one video (``frames`` x ``height`` x ``width`` pixels: needed for i2v).

    ``first`` / ``last`` are uint8 frames already at the target size. For ti2v a known clean
    latent of the first frame may be given as ``first_latent`` instead of pixels.
    """
    fam = bundle.family
    patch = _patch(bundle)
    if fam.conditioning == "text":
        if first is not None or last is not None or first_latent is not None:
            raise BadInputError(f"{fam.name} is text-only: it takes no first or last frame")
        return Condition(patch=patch)
    if fam.conditioning == "first-frame-pinned":
        if last is not None:
            raise BadInputError(
                "ti2v-5b has no last-frame conditioning (no first-party FLF2V exists for it); use an i2v-a14b model"
            )
        if first_latent is not None:
            return Condition(pinned=first_latent.float(), patch=patch)
        if first is None:
            return Condition(patch=patch)
        from wanctl.core.models.codec import encode_frames

        return Condition(pinned=encode_frames(bundle.vae(), [first]), patch=patch)
    # mask-concat (i2v-a14b): the model always takes 36 channels and is trained with a first frame
    if first is None:
        raise BadInputError("i2v-a14b needs a first frame (--first-frame)")
    return _concat_condition(bundle, frames, width, height, first, last)


def empty_condition(bundle: "ModelBundle", frames: int | None, width: int | None, height: int | None) -> Condition:
    """No image information: ti2v text mode; for i2v an all-zero mask and an encoded blank video
    (the 36-channel model has no text-only mode)."""
    if bundle.family.conditioning != "mask-concat":
        return Condition(patch=_patch(bundle))
    return _concat_condition(bundle, frames, width, height, None, None)


def _patch(bundle: "ModelBundle") -> tuple[int, int, int]:
    return tuple(bundle.spec.configs["transformer"].get("patch_size", (1, 2, 2)))


def _concat_condition(bundle, frames, width, height, first, last) -> Condition:
    import torch

    fam = bundle.family
    if not (frames and width and height):
        raise BadInputError("i2v conditioning needs the video's frames and size")
    lt = fam.latent_frames(frames)
    lh, lw = height // fam.stride[1], width // fam.stride[2]
    encoded = encode_condition_video(bundle.vae(), first, last, frames, width, height)
    mask = i2v_mask(frames, lt, lh, lw, first is not None, last is not None).to(encoded.device)
    return Condition(concat=torch.cat([mask, encoded], dim=1), patch=_patch(bundle))
