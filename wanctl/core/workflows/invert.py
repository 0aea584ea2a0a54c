"""``invert``: a clean latent artifact -> a noise artifact (SPEC section 5.1).

The flow ODE is integrated from s = 0 up to the grid's top level on the reverse of the
denoising grid, with the conditional velocity only (no CFG) and the source prompt.

Conditional inversion (default) keeps the source's own first frame as the condition, so the
noise reconstructs the source under the same conditional ODE that ``denoise --first-frame``
uses: ti2v pins latent frame 0 (the source's own clean first latent frame, t = 0); i2v builds the
36-channel condition from the source's first frame. Unconditional inversion (the seed notes'
sketch) inverts the whole latent with text only (i2v: an empty mask and an encoded blank video).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from wanctl.core.io.artifact import Artifact, artifact_digest, check_family, first_frame, input_record, new_meta
from wanctl.core.sampling.conditioning import Condition, build_condition, empty_condition
from wanctl.core.errors import BadInputError
from wanctl.core.sampling.velocity import VelocityModel, invert
from wanctl.core.sampling.schedule import Schedule
from wanctl.core.models.text import encode_prompts

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from wanctl.core.models.bundle import ModelBundle


@dataclass
class InversionResult:
    noise: Artifact
    trajectory: Artifact | None
    calls: int


def check_vae(art: Artifact, bundle: "ModelBundle", where: str) -> None:
    """A latent only makes sense with the VAE that produced it."""
    rec = ((art.meta.get("model") or {}).get("components") or {}).get("vae")
    if rec and rec != bundle.fingerprint("vae"):
        raise BadInputError(
            f"{where}: latent was made with another VAE (fingerprint {rec}, model has {bundle.fingerprint('vae')}); "
            "use the model it was encoded with"
        )


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


def inversion_key(bundle: "ModelBundle", latent: Artifact, *, prompt: str, schedule: Schedule, solver: str,
                  refine: int, conditional: bool) -> str:
    """Cache key: the source latent's content, the model's fingerprints and every parameter."""
    from wanctl.core.io import cache
    
    tensors = [latent.latents] + ([latent.tensors["first_frame"]] if "first_frame" in latent.tensors else [])
    return cache.key_of({
        "source": cache.tensor_digest(*tensors),
        "model": bundle.record(bundle.experts() + ["text_encoder", "tokenizer", "vae"])["fingerprint"],
        "dtype": bundle.options.dtype,
        "prompt": prompt,
        "schedule": schedule.to_meta(),
        "solver": solver,
        "refine": refine,
        "conditional": conditional,
    })


def run_inversion(
    bundle: "ModelBundle",
    latent: Artifact,
    *,
    prompt: str,
    schedule: Schedule,
    solver: str = "euler",
    refine: int = 0,
    conditional: bool = True,
    save_trajectory: bool = False,
    progress: Callable[[int], None] | None = None,
    notice=None,
) -> InversionResult:
    import torch

    where = latent.path or "<stdin>"
    check_family(latent, bundle.family.name, where=where)
    check_vae(latent, bundle, where)
    if latent.meta.get("noise_level", 0.0) != 0.0:
        raise BadInputError(f"{where}: invert needs a clean latent (noise level 0), got s = {latent.meta['noise_level']}")
    if refine and solver != "euler":
        raise BadInputError("--refine applies to the euler solver only")
    if refine < 0:
        raise BadInputError("--refine must be >= 0")
    device = bundle.device
    cond = source_condition(bundle, latent, conditional, notice).to(device)
    emb = encode_prompts(bundle, [prompt])[prompt]
    b = latent.latents.shape[0]
    model = VelocityModel(bundle, emb.repeat(b, 1, 1).to(device), cond, boundary=bundle.spec.boundary)
    states = [latent.latents.float().clone()] if save_trajectory else None

    def on_step(i, x, v, s, s_next):
        if states is not None:
            states.append(x.detach().float().cpu())
        if progress:
            progress(1)

    noise = invert(model, latent.latents.float().to(device), schedule, solver, refine, cond, callback=on_step)
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
        "model_calls": len(model.calls),
    }
    components = bundle.experts() + ["text_encoder", "tokenizer", "vae"]
    inputs = [input_record("latent", where, artifact_digest(latent))] + [
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
        tmeta = new_meta(
            "trajectory",
            family=bundle.family.name,
            command="invert",
            noise_level=schedule.s_max,
            video=video,
            model=meta["model"],
            params=dict(params, levels=schedule.reversed()),
            inputs=inputs,
        )
        ttensors = {"latents": noise}
        for k, st in enumerate(states):
            ttensors[f"trajectory/{k}"] = st
        traj = Artifact(ttensors, tmeta)
    return InversionResult(Artifact(tensors, meta), traj, len(model.calls))
