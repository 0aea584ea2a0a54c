"""``invert``: a clean latent artifact -> a noise artifact.

The flow ODE is integrated from s = 0 up to the grid's top level on the reverse of the
denoising grid, with the conditional velocity only (no CFG) and the source prompt.

Conditional inversion (default) keeps the source's own first frame as the condition, so the
noise reconstructs the source under the same conditional ODE that ``denoise --first-frame``
uses: ti2v pins latent frame 0 (the source's own clean first latent frame, t = 0); i2v builds the
36-channel condition from the source's first frame. Unconditional inversion (the original
design's sketch) inverts the whole latent with text only (i2v: an empty mask and an encoded blank video).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from wanctl.core.io.artifact import Artifact, artifact_digest, check_family, first_frame, input_record, new_meta
from wanctl.core.sampling.conditioning import Condition, build_condition, empty_condition
from wanctl.core.errors import BadInputError
from wanctl.core.sampling.executor import sample
from wanctl.core.workflows.encode import check_vae
from wanctl.core.sampling.plan import RunPlan
from wanctl.core.models.text import encode_prompts

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from wanctl.core.models.bundle import ModelBundle


@dataclass
class InversionResult:
    noise: Artifact
    trajectory: Artifact | None
    calls: int


def first_frame_pixels(bundle: "ModelBundle", art: Artifact, index: int, notice=None):
    """Video ``index``'s first frame: stored in the artifact, else decoded from latent frame 0."""
    img = first_frame(art, index)
    if img is not None:
        return img
    if art.meta.get("noise_level", 0.0) > 0:
        raise BadInputError(f"{art.path or '<stdin>'}: this noise has no stored first frame; pass --first-frame")
    from wanctl.core.models.codec import decode_latents

    if notice:
        notice("artifact has no stored first frame: decoding latent frame 0 with the VAE to rebuild it")
    return next(iter(decode_latents(bundle.vae(), art.latents[index : index + 1, :, :1])))


def source_condition(bundle: "ModelBundle", art: Artifact, conditional: bool, notice=None) -> Condition:
    """The condition under which ``art`` (a clean latent, or a noise made from one) is inverted."""
    fam = bundle.family
    video = art.meta.get("video") or {}
    frames, width, height = video.get("frames"), video.get("width"), video.get("height")
    if fam.conditioning == "text":
        return Condition()
    if not conditional:
        return empty_condition(bundle, frames, width, height).repeat(art.latents.shape[0])
    if fam.conditioning == "first-frame-pinned":
        # the causal VAE encodes pixel frame 0 alone, so latent frame 0 *is* its clean latent
        return build_condition(bundle, first_latent=art.latents[:, :, :1])
    return Condition.cat([
        build_condition(bundle, frames=frames, width=width, height=height,
                        first=first_frame_pixels(bundle, art, i, notice))
        for i in range(art.latents.shape[0])
    ])


def inversion_key(bundle: "ModelBundle", latent: Artifact, plan: RunPlan, *, prompt: str, conditional: bool) -> str:
    """Cache key: the source latent's content, the model's fingerprints and every parameter."""
    from wanctl.core.io import cache
    
    tensors = [latent.latents] + ([latent.tensors["first_frame"]] if "first_frame" in latent.tensors else [])
    return cache.key_of({
        "source": cache.tensor_digest(*tensors),
        "model": bundle.record(bundle.experts() + ["text_encoder", "tokenizer", "vae"])["fingerprint"],
        "dtype": bundle.options.dtype,
        "prompt": prompt,
        "schedule": plan.schedule.to_meta(),
        "solver": plan.solver,
        "refine": plan.refine,
        "experts": [p.expert for p in plan.steps],
        "conditional": conditional,
    })


def run_inversion(
    bundle: "ModelBundle",
    latent: Artifact,
    plan: RunPlan,
    *,
    prompt: str,
    conditional: bool = True,
    save_trajectory: bool = False,
    progress: Callable[[int], None] | None = None,
    notice=None,
) -> InversionResult:
    check_source(bundle, latent)
    schedule, solver, refine = plan.schedule, plan.solver, plan.refine
    device = bundle.device
    cond = source_condition(bundle, latent, conditional, notice).to(device)
    emb = encode_prompts(bundle, [prompt])[prompt]
    b = latent.latents.shape[0]
    states = [latent.latents.float().clone()] if save_trajectory else None

    def on_step(step, x):
        if states is not None:
            states.append(x.detach().float().cpu())
        if progress:
            progress(1)

    noise, state = sample(bundle, plan, latent.latents.float(), cond, emb.repeat(b, 1, 1), on_step=on_step)
    noise = noise.float().cpu()
    video = latent.meta.get("video") or {}
    src_inputs = (latent.meta.get("provenance") or {}).get("inputs") or []
    params = {
        "schedule": schedule.to_meta(),
        "solver": solver,
        "refine": refine,
        "strength": schedule.strength,
        "prompt": prompt,
        "conditional": bool(conditional) and bundle.family.conditioning != "text",
        "conditioning": cond.kind,
        "guidance": None,
        "model_calls": len(state.calls),
        "plan": plan.to_meta(),
    }
    components = bundle.experts() + ["text_encoder", "tokenizer", "vae"]
    inputs = [input_record("latent", latent.path or "<stdin>", artifact_digest(latent))] + [
        dict(r, role=f"latent.{r.get('role')}") for r in src_inputs
    ]
    meta = new_meta(
        "noise",
        family=bundle.family.name,
        command="invert",
        noise_level=schedule.s_max,
        video=video,
        model=bundle.record(components),
        params=params,
        inputs=inputs,
    )
    tensors = {"latents": noise}
    if "first_frame" in latent.tensors:
        tensors["first_frame"] = latent.tensors["first_frame"]
    traj = None
    if states is not None:
        tmeta = dict(meta, kind="trajectory", params=dict(params, levels=schedule.reversed()))
        ttensors = {"latents": noise}
        for k, st in enumerate(states):
            ttensors[f"trajectory/{k}"] = st
        traj = Artifact(ttensors, tmeta)
    return InversionResult(Artifact(tensors, meta), traj, len(state.calls))


def check_source(bundle: "ModelBundle", latent: Artifact) -> None:
    """What an inversion needs of its latent: the model's family and VAE, and noise level 0."""
    where = latent.path or "<stdin>"
    check_family(latent, bundle.family.name, where=where)
    check_vae(latent, bundle, where)
    if latent.meta.get("noise_level", 0.0) != 0.0:
        raise BadInputError(f"{where}: invert needs a clean latent (noise level 0), got s = {latent.meta['noise_level']}")


def plan_invert(bundle: "ModelBundle", latent: Artifact, *, steps: int | None = None, shift: float | None = None,
                grid: str | None = None, sigmas: tuple[float, ...] | None = None, strength: float = 1.0,
                solver: str = "euler", refine: int = 0) -> RunPlan:
    """The plan of an inversion of ``latent``: the reverse of the denoising grid, no CFG. The
    latent is checked here (check_source), so --dry-run refuses what the run would."""
    from wanctl.core.sampling.plan import plan_run
    from wanctl.core.sampling.schedule import schedule_from_options

    check_source(bundle, latent)

    video = latent.meta.get("video") or {}
    fam = bundle.family
    _, _, t, h, w = latent.latents.shape
    frames = video.get("frames") or (t - 1) * fam.stride[0] + 1
    sched = schedule_from_options(bundle.preset, steps=steps, shift=shift, grid=grid, sigmas=sigmas, strength=strength)
    return plan_run(bundle.spec, "invert", schedule=sched, solver=solver, refine=refine, frames=frames,
                    width=video.get("width") or w * fam.stride[2], height=video.get("height") or h * fam.stride[1],
                    batch=latent.latents.shape[0])
