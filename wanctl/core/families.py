"""The three Wan2.2 model families and their official defaults, as data.

No heavy imports: ``info``, ``--help`` and artifact validation use this module.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    """Sampling defaults: a family's official ones (Wan-Video/Wan2.2 configs), or a model's own
    (``ModelSpec.preset``: its ``wanctl_presets.json`` over the family's)."""

    steps: int
    shift: float
    guidance_high: float  # guidance of the high-noise expert (the only one for dense models)
    guidance_low: float  # guidance of the low-noise expert
    boundary: float | None
    frames: int
    fps: int
    sizes: tuple[tuple[int, int], ...]  # (width, height)

    @property
    def default_size(self) -> tuple[int, int]:
        return self.sizes[0]


@dataclass(frozen=True)
class FamilySpec:
    name: str
    vae: str  # "wan2.1" | "wan2.2"
    latent_channels: int
    stride: tuple[int, int, int]  # (t, h, w) of the VAE
    dit_in_channels: int
    dit_out_channels: int
    experts: int
    conditioning: str  # "first-frame-pinned" | "mask-concat" | "text"
    preset: Preset
    description: str = ""
    supports: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of VAE stride x DiT patch (2)."""
        return self.stride[1] * 2

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.stride[0] + 1

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        return width // self.stride[2], height // self.stride[1]


# Config fields fixed by the Wan architecture: every Wan2.2 DiT, and every VAE of a type, has
# these values; only sizes (widths, depths, text / frequency dims) differ between the released,
# tiny and toy models. Released, tiny and toy configs are all built from here.
_DIT_ARCHITECTURE = dict(patch_size=[1, 2, 2], cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                         image_dim=None, added_kv_proj_dim=None, pos_embed_seq_len=None)
_VAE_ARCHITECTURE = {
    "wan2.1": dict(z_dim=16, in_channels=3, out_channels=3, is_residual=False, patch_size=None,
                   temperal_downsample=[False, True, True], scale_factor_temporal=4, scale_factor_spatial=8),
    "wan2.2": dict(z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                   temperal_downsample=[False, True, True], scale_factor_temporal=4, scale_factor_spatial=16),
}


def dit_config(**sizes) -> dict:
    """WanTransformer3DModel kwargs: the architecture's fixed fields plus the given sizes."""
    return copy.deepcopy(_DIT_ARCHITECTURE) | sizes  # copies: callers and diffusers may mutate lists


def vae_config(kind: str, **sizes) -> dict:
    """AutoencoderKLWan kwargs for a VAE type ("wan2.1" / "wan2.2") plus the given sizes."""
    return copy.deepcopy(_VAE_ARCHITECTURE[kind]) | sizes


FAMILIES: dict[str, FamilySpec] = {
    "ti2v-5b": FamilySpec(
        name="ti2v-5b",
        vae="wan2.2",
        latent_channels=48,
        stride=(4, 16, 16),
        dit_in_channels=48,
        dit_out_channels=48,
        experts=1,
        conditioning="first-frame-pinned",
        preset=Preset(
            steps=50,
            shift=5.0,
            guidance_high=5.0,
            guidance_low=5.0,
            boundary=None,
            frames=121,
            fps=24,
            sizes=((1280, 704), (704, 1280)),
        ),
        description="Wan2.2 TI2V-5B: dense DiT, Wan2.2 VAE, text or first-frame conditioning",
        supports=("encode", "decode", "invert", "denoise", "t2v"),
    ),
    "t2v-a14b": FamilySpec(
        name="t2v-a14b",
        vae="wan2.1",
        latent_channels=16,
        stride=(4, 8, 8),
        dit_in_channels=16,
        dit_out_channels=16,
        experts=2,
        conditioning="text",
        preset=Preset(
            steps=40,
            shift=12.0,
            guidance_high=4.0,
            guidance_low=3.0,
            boundary=0.875,
            frames=81,
            fps=16,
            sizes=((1280, 720), (832, 480), (720, 1280), (480, 832)),
        ),
        description="Wan2.2 T2V-A14B: two experts (high / low noise), Wan2.1 VAE, text only",
        supports=("encode", "decode", "invert", "denoise", "t2v"),
    ),
    "i2v-a14b": FamilySpec(
        name="i2v-a14b",
        vae="wan2.1",
        latent_channels=16,
        stride=(4, 8, 8),
        dit_in_channels=36,
        dit_out_channels=16,
        experts=2,
        conditioning="mask-concat",
        preset=Preset(
            steps=40,
            shift=5.0,
            guidance_high=3.5,
            guidance_low=3.5,
            boundary=0.900,
            frames=81,
            fps=16,
            sizes=((1280, 720), (832, 480), (720, 1280), (480, 832)),
        ),
        description="Wan2.2 I2V-A14B: two experts, Wan2.1 VAE, 36-channel mask + image-latent condition",
        supports=("encode", "decode", "invert", "denoise", "flf2v"),
    ),
}

# The official default negative prompt (Wan-Video/Wan2.2, shared_config.sample_neg_prompt).
# Used when a command applies CFG and no --negative-prompt is given.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


def check_frames(frames: int) -> None:
    """Frames must be 4n+1 (the causal VAE encodes frame 0 alone, then groups of 4)."""
    from wanctl.core.errors import BadInputError

    if frames < 1 or (frames - 1) % 4 != 0:
        lo = max(1, (frames - 1) // 4 * 4 + 1)
        raise BadInputError(f"frame count {frames} is not 4n+1 (nearest valid: {lo} or {lo + 4})")


def check_size(family: FamilySpec, width: int, height: int) -> None:
    from wanctl.core.errors import BadInputError

    m = family.size_multiple
    if width % m or height % m or width <= 0 or height <= 0:
        raise BadInputError(
            f"size {width}x{height} is not a multiple of {m} for {family.name} "
            f"(nearest: {max(m, (2 * width + m) // (2 * m) * m)}x{max(m, (2 * height + m) // (2 * m) * m)})"
        )
