"""``denoise``: noise (inverted or fresh) -> clean latents, for one or many targets.

Reuse is the point: the noise and the models load once, each distinct prompt is encoded once,
and targets (a first frame, a prompt, an output path each) run in batches. A target that cannot
be prepared (unreadable image, ...) is reported and skipped; the others still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from wanctl.core.errors import BadInputError
from wanctl.core.io.artifact import Artifact, artifact_digest, check_family, input_record, new_meta, sha256_file
from wanctl.core.models.text import encode_prompts
from wanctl.core.sampling.conditioning import Condition, build_condition, empty_condition
from wanctl.core.sampling.executor import sample
from wanctl.core.sampling.plan import RunPlan
from wanctl.core.sampling.schedule import Schedule, custom_schedule, make_schedule
from wanctl.core.sampling.velocity import seeded_noise
from wanctl.core.shard import Shard
from wanctl.core.workflows.manifest import read_manifest as _read_manifest, take_share

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    import numpy as np
    import torch

    from wanctl.core.models.bundle import ModelBundle


@dataclass
class Target:
    """One output of a denoise run."""

    row: int  # 1-based position (manifest row, or --first-frame order)
    prompt: str
    output: str
    first_frame: str | None = None  # image path; None = the noise's own condition / text only
    image: "np.ndarray | None" = None  # prepared pixels at the video size
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    from_manifest: bool = False
    mine: bool = True  # this process's share of the rows (see wanctl/core/shard.py)
    skipped: bool = False  # resumed: its output exists already

    @property
    def label(self) -> str:
        return f"manifest row {self.row}" if self.from_manifest else f"target {self.row}"


# --------------------------------------------------------------------------- targets


MANIFEST_COLUMNS = ("first_frame", "prompt", "output")


def read_manifest(path: str) -> list[dict]:
    """Rows of a denoise manifest (header: first_frame,prompt,output), paths relative to it; see
    :func:`wanctl.core.workflows.manifest.read_manifest`."""
    return _read_manifest(path, MANIFEST_COLUMNS, paths=("first_frame", "output"))


def image_files(folder: str, notice=None) -> list[str]:
    from wanctl.core.io.video import IMAGE_EXTS, frame_files

    files = [str(f) for f in frame_files(folder)]  # natural order: frame_9 before frame_10
    if not files:
        raise BadInputError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))})")
    other = sorted(f.name for f in Path(folder).iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.suffix.lower() not in IMAGE_EXTS)
    if other and notice is not None:  # e.g. an animated .gif: not a still first frame
        notice(f"{folder}: skipped {len(other)} file(s) that are not still images ({', '.join(other[:3])}"
               f"{', ...' if len(other) > 3 else ''})")
    return files


def plan_targets(
    *,
    first_frames: list[str],
    manifest: str | None,
    prompt: str | None,
    output: str,
    allow_outside: bool = False,
    shard: Shard | None = None,
    force: bool = False,
    notice=None,
) -> list[Target]:
    """Targets from repeated --first-frame (files or folders), a manifest, or neither (one).

    One target: ``output`` is the artifact path. Several: ``output`` is a folder and each target
    is written to ``<folder>/<first frame stem>.safetensors`` unless the manifest names it. Two
    targets resolving to one file are refused, and so is a manifest output outside both the
    manifest's folder and ``output`` unless ``allow_outside``. A manifest row that cannot be
    read becomes a target with an error (it fails alone).

    Under a ``shard`` (a launcher or --shard), every process plans every target the same way
    and marks its own share (``mine``: position mod N); one of its targets whose output exists
    is ``skipped`` (resume) unless ``force``. See :func:`wanctl.core.workflows.manifest.take_share`.
    """
    specs: list[dict] = []
    for ff in first_frames:
        if Path(ff).is_dir():
            specs += [{"first_frame": f} for f in image_files(ff, notice)]
        else:
            specs.append({"first_frame": ff})
    if manifest:
        specs += [dict(r, from_manifest=True) for r in read_manifest(manifest)]
    if not specs:
        specs = [{"first_frame": None}]
    multi = len(specs) > 1
    roots = [Path(output).resolve()] + ([Path(manifest).resolve().parent] if manifest else [])
    targets: list[Target] = []
    seen: dict[Path, str] = {}  # output -> the label of the target that writes it
    for i, sp in enumerate(specs, 1):
        row = sp.get("row", i)
        label = f"manifest row {row}" if sp.get("from_manifest") else f"target {i}"
        if sp.get("error"):
            targets.append(Target(row=row, prompt=prompt or "", output="", error=sp["error"], from_manifest=True))
            continue
        p = sp.get("prompt") or prompt
        if not p:
            raise BadInputError(f"{label}: no prompt (give -p or a prompt column)")
        out = sp.get("output")
        if not out:
            if not multi:
                out = output
            else:
                stem = Path(sp["first_frame"]).stem if sp.get("first_frame") else f"target-{i}"
                out = str(Path(output) / f"{stem}.safetensors")
                if Path(out).resolve() in seen:
                    out = str(Path(output) / f"{stem}-{i}.safetensors")
        elif not allow_outside and not any(Path(out).resolve().is_relative_to(r) for r in roots):
            raise BadInputError(f"{label}: output {out} is outside the manifest's folder and -o; "
                                "pass --allow-outside to write there")
        key = Path(out).resolve() if out != "-" else Path("-")
        if key in seen:
            raise BadInputError(f"{label}: output {out} is also the output of {seen[key]}; nothing was run")
        seen[key] = label
        targets.append(Target(row=row, prompt=p, output=out, first_frame=sp.get("first_frame"),
                              from_manifest=bool(sp.get("from_manifest"))))
    take_share(targets, shard, force=force)
    return targets



def prepare_images(targets: list[Target], width: int, height: int, *, background: tuple[int, int, int] = (0, 0, 0)) -> None:
    """Load each target's first frame at the video size (as a viewer shows it, transparency
    composited on ``background``); record errors instead of raising, so that a target whose
    image cannot be read (or is too large to decode) fails alone."""
    from wanctl.core.io.video import aspect_differs, load_image, resize_crop

    for t in targets:
        if not t.first_frame:
            continue
        try:
            img = load_image(t.first_frame, background=background, notices=t.notes)
        except BadInputError as e:
            t.error = e.message
            continue
        h0, w0 = img.shape[:2]
        if (w0, h0) != (width, height):
            how = "resized and center-cropped" if aspect_differs(w0, h0, width, height) else "resized"
            t.notes.append(f"{t.first_frame}: {w0}x{h0} {how} to {width}x{height}")
        t.image = resize_crop(img, width, height)


# --------------------------------------------------------------------------- the run


@dataclass
class NoiseSource:
    """Where the starting noise comes from: an artifact, or a seed."""

    latents: "torch.Tensor"  # (1, C, T, h, w)
    schedule: Schedule
    frames: int
    width: int
    height: int
    fps: float
    artifact: Artifact | None = None
    seed: int | None = None
    init: Artifact | None = None  # video-to-video: the clean latent noised to the grid's first level

    def describe(self) -> dict:
        if self.artifact is not None:
            return {"noise": self.artifact.path or "<stdin>", "noise_sha256": artifact_digest(self.artifact)}
        if self.init is not None:
            return {"seed": self.seed, "init": self.init.path or "<stdin>", "init_sha256": artifact_digest(self.init),
                    "init_strength": self.schedule.strength}
        return {"seed": self.seed}

    def condition_source(self, family) -> tuple[Artifact | None, bool]:
        """The artifact whose first frame conditions a target given none, and whether it does:
        a conditionally inverted noise's source; for video-to-video, the init latent's own
        first frame when the family needs an image (i2v-a14b), else text only."""
        if self.artifact is not None:
            return self.artifact, bool((self.artifact.meta.get("params") or {}).get("conditional"))
        if self.init is not None:
            return self.init, family.conditioning == "mask-concat" and "first_frame" in self.init.tensors
        return None, False


def noise_schedule(art: Artifact, *, steps: int | None = None, shift: float | None = None, grid: str | None = None,
                   sigmas: tuple[float, ...] | None = None) -> Schedule:
    """The grid a noise artifact is denoised on: its own, or rebuilt from the given options on
    the noise's own grid and shift by default, at the noise's level."""
    own = Schedule.from_meta((art.meta.get("params") or {}).get("schedule") or {})
    if steps is None and shift is None and grid is None and sigmas is None:
        return own
    level = own.s_max
    strength = 1.0 if level >= 0.999 else level
    if sigmas is not None:
        return custom_schedule(sigmas, strength)
    g = grid or (own.grid if own.grid != "custom" else "official")
    sh = shift if shift is not None else own.shift
    if sh is None:
        raise BadInputError("the noise was made on an exact --sigmas list: give --shift (or --sigmas) to rebuild its grid")
    return make_schedule(steps or own.steps, sh, g, strength)


def noise_from_artifact(art: Artifact, bundle: "ModelBundle", schedule: Schedule | None, warn=None) -> NoiseSource:
    from wanctl.core.workflows.encode import check_vae

    where = art.path or "<stdin>"
    check_family(art, bundle.family.name, where=where)
    check_vae(art, bundle, where)
    if warn:
        rec = (art.meta.get("model") or {}).get("components") or {}
        differ = [c for c in bundle.experts() + ["text_encoder"] if rec.get(c) and rec[c] != bundle.fingerprint(c)]
        if differ:
            warn(f"{where} was inverted with other weights ({', '.join(differ)} fingerprint differs); same family, continuing")
    own = Schedule.from_meta((art.meta.get("params") or {}).get("schedule") or {})
    if abs(own.s_max - float(art.meta.get("noise_level", own.s_max))) > 1e-6:
        raise BadInputError(f"{where}: noise level {art.meta.get('noise_level')} does not match its grid")
    if schedule is None:
        schedule = own
    elif abs(schedule.s_max - own.s_max) > 1e-3:
        raise BadInputError(f"{where}: the new grid starts at s = {schedule.s_max:.4f} but the noise is at "
                            f"s = {own.s_max:.4f}; give levels that start there")
    v = art.meta.get("video") or {}
    if art.latents.shape[0] != 1:
        raise BadInputError(f"{where}: holds {art.latents.shape[0]} noises; denoise takes one")
    return NoiseSource(art.latents.float(), schedule, v["frames"], v["width"], v["height"], v.get("fps") or bundle.preset.fps, artifact=art)


def fresh_noise(bundle: "ModelBundle", *, seed: int, frames: int, width: int, height: int, schedule: Schedule, fps: float | None = None) -> NoiseSource:
    fam = bundle.family
    shape = (1, fam.latent_channels, fam.latent_frames(frames), height // fam.stride[1], width // fam.stride[2])
    return NoiseSource(seeded_noise(shape, seed), schedule, frames, width, height, fps or bundle.preset.fps, seed=seed)


def target_condition(bundle: "ModelBundle", src: NoiseSource, target: Target, conditional_noise: bool) -> tuple[Condition, str]:
    """The condition a target is denoised under, and where it comes from.

    With a first frame: that frame. Without one: the noise's own source condition (a conditional
    inversion regenerates its source's first frame under the new prompt), else no image at all.
    """
    if target.image is not None:
        cond = build_condition(bundle, frames=src.frames, width=src.width, height=src.height, first=target.image)
        return cond, target.first_frame
    art, _ = src.condition_source(bundle.family)
    if art is not None and conditional_noise:
        from wanctl.core.workflows.invert import source_condition

        return source_condition(bundle, art, conditional=True), "noise source" if art is src.artifact else "init"
    if bundle.family.conditioning == "mask-concat" and src.artifact is None:
        raise BadInputError("i2v-a14b needs a first frame (--first-frame)")
    return empty_condition(bundle, src.frames, src.width, src.height), None


def run_denoise(
    bundle: "ModelBundle",
    plan: RunPlan,
    src: NoiseSource,
    targets: list[Target],
    *,
    on_result: Callable[[Target, Artifact], None],
    speed=None,
    progress: Callable[[int], None] | None = None,
    notice=None,
) -> None:
    """Denoise ``src`` once per target, ``plan.batch`` targets per run of the plan, with the
    step caches of ``speed``; ``on_result`` gets each finished artifact."""
    from wanctl.core.sampling.acceleration import SpeedOptions

    ok = [t for t in targets if t.error is None]
    if not ok:
        return
    with (speed or SpeedOptions()).open(bundle, notice) as caches:
        _run_batches(bundle, plan, src, ok, on_result, caches, progress, notice)


def _run_batches(bundle, plan: RunPlan, src: NoiseSource, ok: list[Target], on_result, caches, progress, notice) -> None:
    import torch

    negative = plan.negative_prompt
    embeds = encode_prompts(bundle, [t.prompt for t in ok] + ([negative] if negative is not None else []))
    device = bundle.device
    _, conditional_noise = src.condition_source(bundle.family)
    full = plan
    for start in range(0, len(ok), full.batch):
        batch = ok[start : start + full.batch]
        if len(batch) < full.batch:  # the last, smaller batch: its own plan, so its metadata is true
            plan = replace(full, batch=len(batch))
        conds, sources = [], []
        for t in batch:
            for n in t.notes:
                if notice:
                    notice(n)
            cond_t, source = target_condition(bundle, src, t, conditional_noise)
            conds.append(cond_t)
            sources.append(source)
        cond = Condition.cat(conds).to(device)
        b = len(batch)
        emb = torch.cat([embeds[t.prompt] for t in batch])
        neg = embeds[negative].repeat(b, 1, 1) if negative is not None else None
        out, state = sample(bundle, plan, src.latents.repeat(b, 1, 1, 1, 1), cond, emb, neg, caches=caches,
                            on_step=(lambda *a: progress(b)) if progress else None)
        out = out.float().cpu()
        for i, t in enumerate(batch):
            on_result(t, _artifact(bundle, plan, src, t, out[i : i + 1], cond.select([i]), sources[i], len(state.calls), b,
                                   caches))


def _artifact(bundle, plan: RunPlan, src: NoiseSource, t: Target, latents, cond: Condition, source, forwards, batch,
              caches) -> Artifact:
    import numpy as np
    import torch

    params = {
        "schedule": src.schedule.to_meta(),
        "solver": plan.solver,
        "prompt": t.prompt,
        "negative_prompt": plan.negative_prompt,
        "guidance": plan.guidance.to_meta() if plan.uses_cfg else None,
        "boundary": plan.boundary,
        "first_frame": source,
        "conditioning": cond.kind,
        "batch_size": batch,
        "dit_forwards": forwards,
        "acceleration": dict(caches.settings) if caches is not None else None,
        "plan": plan.to_meta(),
        **src.describe(),
    }
    inputs = []
    if src.artifact is not None:
        inputs.append(input_record("noise", src.artifact.path or "<stdin>", artifact_digest(src.artifact)))
    if src.init is not None:
        inputs.append(input_record("init", src.init.path or "<stdin>", artifact_digest(src.init)))
    tensors = {"latents": latents}
    if t.first_frame:
        inputs.append(input_record("first_frame", t.first_frame, sha256_file(t.first_frame)))
    if t.image is not None:
        tensors["first_frame"] = torch.from_numpy(np.array(t.image, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).contiguous()
    elif source in ("noise source", "init"):
        cond_art, _ = src.condition_source(bundle.family)
        if "first_frame" in cond_art.tensors:
            tensors["first_frame"] = cond_art.tensors["first_frame"][:1]
    meta = new_meta(
        "latent",
        family=bundle.family.name,
        command="denoise",
        noise_level=0.0,
        video={"width": src.width, "height": src.height, "frames": src.frames, "fps": src.fps},
        model=bundle.record(bundle.experts() + ["text_encoder", "tokenizer", "vae"]),
        params=params,
        inputs=inputs,
    )
    return Artifact(tensors, meta)


# --------------------------------------------------------------------------- the command's workflow


def noise_source(bundle: "ModelBundle", art: Artifact | None, *, seed: int | None = None, frames: int | None = None,
                 size: tuple[int, int] | None = None, steps: int | None = None, shift: float | None = None,
                 grid: str | None = None, sigmas: tuple[float, ...] | None = None, first_images: "Sequence[str]" = (),
                 init: Artifact | None = None, strength: float | None = None, warn=None) -> NoiseSource:
    """Where a run starts: a noise artifact (its grid, unless --steps/--shift/--grid/--sigmas
    rebuild it on the noise's own grid and level) or seeded noise of the given or preset size
    (default: the size of the first of ``first_images`` that can be read; one that cannot fails
    its own target later, in :func:`prepare_images`)."""
    from wanctl.core.families import check_frames, check_size
    from wanctl.core.sampling.schedule import schedule_from_options

    pre = bundle.preset
    if strength is not None and init is None:
        raise BadInputError("--strength applies to video-to-video (--init LATENT)")
    if init is not None:
        if art is not None:
            raise BadInputError("--init and a noise artifact are two starting points; give one")
        if frames is not None or size is not None:
            raise BadInputError("--frames/--size apply to seeded noise; the --init latent fixes them")
        return init_noise(bundle, init, strength=INIT_STRENGTH if strength is None else strength, seed=seed or 0,
                          steps=steps, shift=shift, grid=grid, sigmas=sigmas)
    if art is not None:
        if frames is not None or size is not None:
            raise BadInputError("--frames/--size apply to seeded noise; a noise artifact fixes them")
        if seed is not None:
            raise BadInputError("--seed applies to seeded noise; a noise artifact is the starting noise")
        sched = None
        if steps is not None or shift is not None or grid is not None or sigmas is not None:
            sched = noise_schedule(art, steps=steps, shift=shift, grid=grid, sigmas=sigmas)
        return noise_from_artifact(art, bundle, sched, warn=warn)
    fam = bundle.family
    n_frames = pre.frames if frames is None else frames
    check_frames(n_frames)
    wh = size
    if wh is None:
        from wanctl.core.io.video import fit_size, probe

        for path in first_images:
            try:
                info = probe(path)  # the size as shown, from the header: nothing decoded
            except BadInputError:
                continue
            wh = fit_size(info.width, info.height, fam.size_multiple, None, what=f"{path} (the first --first-frame)")
            break
        else:
            wh = pre.default_size
    check_size(fam, *wh)
    sched = schedule_from_options(pre, steps=steps, shift=shift, grid=grid, sigmas=sigmas)
    return fresh_noise(bundle, seed=seed or 0, frames=n_frames, width=wh[0], height=wh[1], schedule=sched)


INIT_STRENGTH = 0.7  # video-to-video default: keeps the layout and motion, redraws the look


def init_noise(bundle: "ModelBundle", init: Artifact, *, strength: float, seed: int, steps: int | None = None,
               shift: float | None = None, grid: str | None = None, sigmas: tuple[float, ...] | None = None) -> NoiseSource:
    """Video-to-video (SDEdit): the clean ``init`` latent noised with seeded noise to the first
    level s of the grid cut at ``strength``, x_s = (1 - s) x_0 + s e, then denoised from there.
    Strength 1 is generation from the same seed (the grid's first level counts as pure noise, as
    in every seeded run); strength 0 runs no step and returns the source."""
    from wanctl.core.sampling.schedule import Schedule, schedule_from_options
    from wanctl.core.workflows.encode import check_vae

    where = init.path or "<stdin>"
    if init.kind != "latent" or float(init.meta.get("noise_level", 0.0)) != 0.0:
        raise BadInputError(f"{where}: --init takes a clean latent (from `wanctl encode`), not a {init.kind} artifact")
    check_family(init, bundle.family.name, where=where)
    check_vae(init, bundle, where)
    if not 0.0 <= strength <= 1.0:
        raise BadInputError(f"--strength must be in [0, 1], got {strength}")
    if init.latents.shape[0] != 1:
        raise BadInputError(f"{where}: holds {init.latents.shape[0]} videos; --init takes one")
    x0 = init.latents.float()
    v = init.meta.get("video") or {}
    fam = bundle.family
    frames = v.get("frames") or (x0.shape[2] - 1) * fam.stride[0] + 1
    width, height = v.get("width") or x0.shape[4] * fam.stride[2], v.get("height") or x0.shape[3] * fam.stride[1]
    full = schedule_from_options(bundle.preset, steps=steps, shift=shift, grid=grid, sigmas=sigmas)
    if strength == 0.0:
        sched = Schedule(full.grid, full.steps, full.shift, (0.0,), 0.0, ())
        start = x0
    else:
        sched = schedule_from_options(bundle.preset, steps=steps, shift=shift, grid=grid, sigmas=sigmas, strength=strength)
        eps = seeded_noise(tuple(x0.shape), seed)
        s0 = sched.s_max
        start = eps if strength >= 1.0 else (1.0 - s0) * x0 + s0 * eps
    return NoiseSource(start, sched, frames, width, height, v.get("fps") or bundle.preset.fps, seed=seed, init=init)


def plan_denoise(bundle: "ModelBundle", src: NoiseSource, *, solver: str, guidance: float | None = None,
                 guidance_low: float | None = None, negative_prompt: str | None = None, batch_size: int = 1,
                 cfg_batch: bool = False) -> RunPlan:
    from wanctl.core.sampling.plan import plan_run, resolve_guidance

    g = resolve_guidance(bundle.family, bundle.preset, guidance, guidance_low)
    return plan_run(bundle.spec, "denoise", schedule=src.schedule, solver=solver, frames=src.frames, width=src.width,
                    height=src.height, guidance=g, negative_prompt=negative_prompt, batch=batch_size,
                    branches_batched=cfg_batch)
