"""First-last-frame to video on i2v-a14b, forward-only or with a real bidirectional sampler.

Forward-only FLF2V is the i2v 36-channel condition built from the pixel video
[first, zeros..., last] (what diffusers' WanImageToVideoPipeline does with ``last_image``).

``--bidirectional`` adds a backward pass that sees different information: the DiT runs on the
time-flipped latent with a condition *re-encoded* from [last, zeros..., first], so the last frame
sits in the causal VAE's single-frame slot with a full mask (optionally with reversed temporal
RoPE positions). The two velocities are fused per step, ``uniform`` (0.5 / 0.5) or ``linear`` in
frame position (forward trusted near the first frame, backward near the last), and a stateless
solver (euler or midpoint) integrates the fused field.

``mode="mirror"`` reproduces the published construction: the *forward* condition flipped in
time, reversed RoPE, 0.5 / 0.5. The Wan DiT is equivariant to a joint permutation of tokens and
positions, so that backward pass equals the flipped forward pass and the result equals
forward-only sampling (tested): it is kept so the claim can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from wanctl.core.errors import BadInputError
from wanctl.core.sampling.conditioning import Condition, build_condition
from wanctl.core.sampling.executor import execute
from wanctl.core.sampling.plan import RunPlan
from wanctl.core.sampling.velocity import RunState, VelocityModel

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from wanctl.core.models.bundle import ModelBundle

FUSIONS = ("uniform", "linear")
MODES = ("reencode", "mirror")


def fusion_weights(frames: int, fusion: str) -> "torch.Tensor":
    """Forward-pass weight per latent frame, shaped (1, 1, T, 1, 1); the backward gets 1 - w."""
    import torch

    if fusion == "uniform":
        w = torch.full((frames,), 0.5)
    elif fusion == "linear":
        w = torch.linspace(1.0, 0.0, frames) if frames > 1 else torch.full((1,), 0.5)
    else:
        raise BadInputError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
    return w.view(1, 1, frames, 1, 1)


def conditions(bundle: "ModelBundle", first, last, frames: int, width: int, height: int, mode: str) -> tuple[Condition, Condition]:
    """(forward condition, backward condition) for the bidirectional sampler."""
    fwd = build_condition(bundle, frames=frames, width=width, height=height, first=first, last=last)
    if mode == "mirror":
        return fwd, fwd.flip_time()
    if mode != "reencode":
        raise BadInputError(f"unknown bidirectional mode {mode!r}; use one of {', '.join(MODES)}")
    # the backward pass's own condition: the last frame is now frame 0 of a [last, 0..., first] video
    bwd = build_condition(bundle, frames=frames, width=width, height=height, first=last, last=first)
    return fwd, bwd


@dataclass
class BidirectionalVelocity:
    """v(x, s) = w * v_forward(x) + (1 - w) * flip(v_backward(flip(x))), per latent frame.

    ``passes`` is one model over the batch [x, flip(x)] (both conditions, batched), or two
    models (forward, backward) called one after the other. ``weights`` live on the device.

    ``fuse_above``: below this noise level the forward velocity alone is used (an experiment of
    benchmarks/quality.py, not a CLI option: the run plan does not know about it, so with batched
    passes the backward half is still computed there and thrown away)."""

    passes: tuple
    weights: "torch.Tensor"
    fuse_above: float = 0.0

    def __call__(self, x: "torch.Tensor", s: float) -> "torch.Tensor":
        import torch

        if s < self.fuse_above and len(self.passes) == 2:
            return self.passes[0](x, s)
        xb = torch.flip(x, dims=[2])
        if len(self.passes) == 1:
            vf, vb = self.passes[0](torch.cat([x, xb]), s).chunk(2)
            if s < self.fuse_above:
                return vf
        else:
            vf, vb = self.passes[0](x, s), self.passes[1](xb, s)
        return self.weights * vf + (1.0 - self.weights) * torch.flip(vb, dims=[2])


@dataclass
class FLF2VResult:
    latents: "torch.Tensor"
    state: RunState


def run_flf2v(
    bundle: "ModelBundle",
    plan: RunPlan,
    *,
    first: "np.ndarray",
    last: "np.ndarray",
    embeds: "torch.Tensor",
    negative: "torch.Tensor | None",
    noise: "torch.Tensor",
    mode: str = "reencode",
    reverse_rope: bool = False,
    fusion: str = "uniform",
    progress: Callable[[int], None] | None = None,
    fuse_above: float = 0.0,
) -> FLF2VResult:
    """Denoise ``noise`` (1, 16, T, h, w) into an FLF2V latent along ``plan``."""
    import torch

    if bundle.family.conditioning != "mask-concat":
        raise BadInputError(f"flf2v needs an i2v-a14b model; {bundle.family.name} has no last-frame conditioning")
    device = bundle.device
    emb = embeds.to(device)
    neg = negative.to(device) if negative is not None else None
    frames, width, height = plan.frames, plan.width, plan.height
    state = RunState(plan)
    tick = (lambda *a: progress(1)) if progress else None
    if plan.passes == 1:
        cond = build_condition(bundle, frames=frames, width=width, height=height, first=first, last=last).to(device)
        model = VelocityModel(bundle, state, emb, cond, neg)
        out = execute(plan, model, noise.to(device), state, on_step=tick)
        return FLF2VResult(out, state)
    if mode == "mirror":
        reverse_rope, fusion = True, "uniform"
    fwd, bwd = conditions(bundle, first, last, frames, width, height, mode)
    fwd, bwd = fwd.to(device), bwd.to(device)
    weights = fusion_weights(noise.shape[2], fusion).to(device)
    if plan.branches_batched:
        passes = (VelocityModel(bundle, state, emb.repeat(2, 1, 1), Condition.cat([fwd, bwd]),
                                neg.repeat(2, 1, 1) if neg is not None else None, rope_reverse=(False, reverse_rope)),)
    else:
        passes = (VelocityModel(bundle, state, emb, fwd, neg),
                  VelocityModel(bundle, state, emb, bwd, neg, rope_reverse=(reverse_rope,)))
    out = execute(plan, BidirectionalVelocity(passes, weights, fuse_above), noise.to(device), state, on_step=tick)
    return FLF2VResult(out, state)


# --------------------------------------------------------------------------- the command's workflow

# The FLF2V recipe the bidirectional idea comes from (the official i2v defaults are shift 5,
# guidance 3.5); steps and frames come from the model's presets.
FLF2V_SHIFT, FLF2V_GUIDANCE = 16.0, 5.0


def check_bidirectional_options(bidirectional: bool, mode: str | None, fusion: str | None, reverse_rope: bool) -> None:
    """Refuse options of the bidirectional sampler that would be ignored (``None``: not given)."""
    if fusion is not None and fusion not in FUSIONS:
        raise BadInputError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
    if mode is not None and mode not in MODES:
        raise BadInputError(f"unknown bidirectional mode {mode!r}; use one of {', '.join(MODES)}")
    given = [n for n, v in (("--bidirectional-mode", mode), ("--fusion", fusion), ("--reverse-rope", reverse_rope or None))
             if v is not None]
    if given and not bidirectional:
        raise BadInputError(f"{', '.join(given)} apply to --bidirectional sampling only")
    if mode == "mirror" and (fusion is not None or reverse_rope):
        raise BadInputError("--bidirectional-mode mirror fixes uniform fusion and reversed RoPE: drop --fusion/--reverse-rope")


def plan_flf2v(bundle: "ModelBundle", src, *, solver: str | None = None, guidance: float | None = None,
               guidance_low: float | None = None, negative_prompt: str | None = None, bidirectional: bool = False,
               cfg_batch: bool = False) -> RunPlan:
    from wanctl.core.sampling.plan import plan_run, resolve_guidance

    fam = bundle.family
    if fam.conditioning != "mask-concat":
        raise BadInputError(f"flf2v needs an i2v-a14b model: {fam.name} has no last-frame conditioning "
                            "(ti2v-5b has no first-party FLF2V, and diffusers silently ignores last_image there)")
    g = resolve_guidance(fam, bundle.preset, FLF2V_GUIDANCE if guidance is None else guidance, guidance_low)
    return plan_run(bundle.spec, "flf2v", schedule=src.schedule, solver=solver or ("euler" if bidirectional else "unipc"),
                    frames=src.frames, width=src.width, height=src.height, guidance=g, negative_prompt=negative_prompt,
                    branches_batched=cfg_batch, bidirectional=bidirectional)


def generate_flf2v(bundle: "ModelBundle", plan: RunPlan, src, *, first_frame: str, last_frame: str, first, last,
                   prompt: str,
                   mode: str = "reencode", reverse_rope: bool = False, fusion: str = "uniform", progress=None,
                   notice=None):
    """Run an flf2v plan from the two frames (``first`` / ``last``: the images as read from the files
    ``first_frame`` / ``last_frame``); returns (latent artifact, DiT forwards made)."""
    import numpy as np
    import torch

    from wanctl.core.io.artifact import Artifact, input_record, new_meta, sha256_file
    from wanctl.core.io.video import aspect_differs, resize_crop
    from wanctl.core.models.text import encode_prompts

    width, height = plan.width, plan.height
    if notice:
        if (first.shape[1], first.shape[0]) != (width, height):
            notice(f"first frame {first.shape[1]}x{first.shape[0]} resized and center-cropped to {width}x{height}")
        if (last.shape[1], last.shape[0]) != (first.shape[1], first.shape[0]):
            how = "resized and center-cropped" if aspect_differs(last.shape[1], last.shape[0], width, height) else "resized"
            notice(f"last frame {last.shape[1]}x{last.shape[0]} {how} to the first frame's {width}x{height}")
        if sha256_file(first_frame) == sha256_file(last_frame):
            notice("first and last frame are the same image: generating a loop")
    first, last = resize_crop(first, width, height), resize_crop(last, width, height)
    neg = plan.negative_prompt
    emb = encode_prompts(bundle, [prompt] + ([neg] if neg is not None else []))
    bidirectional = plan.passes == 2
    res = run_flf2v(bundle, plan, first=first, last=last, embeds=emb[prompt], negative=emb[neg] if neg is not None else None,
                    noise=src.latents, mode=mode, reverse_rope=reverse_rope, fusion=fusion, progress=progress)

    def pix(img):
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).contiguous()

    params = {
        "prompt": prompt, "negative_prompt": neg, "guidance": plan.guidance.to_meta(),
        "boundary": plan.boundary, "schedule": plan.schedule.to_meta(), "solver": plan.solver,
        "bidirectional": bidirectional, "bidirectional_mode": mode if bidirectional else None,
        "reverse_rope": (reverse_rope or mode == "mirror") if bidirectional else None,
        "fusion": (fusion if mode != "mirror" else "uniform") if bidirectional else None,
        "cfg_batch": plan.branches_batched, "dit_forwards": len(res.state.calls),
        "first_frame": first_frame, "last_frame": last_frame, "plan": plan.to_meta(), **src.describe(),
    }
    inputs = [input_record("first_frame", first_frame, sha256_file(first_frame)),
              input_record("last_frame", last_frame, sha256_file(last_frame))]
    meta = new_meta("latent", family=plan.family, command="flf2v", noise_level=0.0,
                    video={"width": width, "height": height, "frames": plan.frames, "fps": src.fps},
                    model=bundle.record(bundle.experts() + ["text_encoder", "tokenizer", "vae"]), params=params, inputs=inputs)
    art = Artifact({"latents": res.latents.float().cpu(), "first_frame": pix(first), "last_frame": pix(last)}, meta)
    return art, len(res.state.calls)
