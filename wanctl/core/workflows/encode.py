"""``encode`` and ``decode`` as library functions: pixels <-> latent artifacts.

Planning (what will be read, trimmed, resized) is separate from the work so the CLI can report
it and fail on bad input before loading a model.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from wanctl.core.io import video as vio
from wanctl.core.io.artifact import Artifact, input_record, new_meta, sha256_file
from wanctl.core.errors import BadInputError
from wanctl.core.families import FamilySpec, check_frames, check_size

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from wanctl.core.models.bundle import ModelBundle


@dataclass
class EncodePlan:
    source: str
    info: vio.SourceInfo
    family: FamilySpec
    start: float
    fps: float  # output fps
    source_fps: float
    frames: int | None  # requested (4n+1) or None = as many as fit
    width: int
    height: int
    notes: list[str] = field(default_factory=list)
    background: tuple[int, int, int] = (0, 0, 0)  # what transparent pixels are composited on

    @property
    def resized(self) -> bool:
        return (self.width, self.height) != (self.info.width, self.info.height)


def plan_encode(
    source: str,
    family: FamilySpec,
    *,
    frames: int | None = None,
    start: float = 0.0,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    preset=None,
    background: tuple[int, int, int] = (0, 0, 0),
) -> EncodePlan:
    """What an encode reads and writes; ``preset`` (the model's, default the family's) gives the
    frame rate of inputs that have none (images, folders, animations whose frame durations vary).
    Frames are read at the output rate, each the source frame showing at its time."""
    default_fps = (preset or family.preset).fps
    info = vio.probe(source)
    if not (math.isfinite(start) and start >= 0):
        raise BadInputError(f"--start must be a finite number >= 0, got {start}")
    if frames is not None:
        check_frames(frames)
    notes: list[str] = list(info.notes)
    if info.fps is None:
        src_fps = float(fps or default_fps)
        if fps is None:
            if info.animated:
                notes.append(f"{info.kind} frames are resampled by their timestamps to {src_fps:g} fps (the model's default)")
            else:
                notes.append(f"{info.kind} input has no frame rate: using {src_fps:g} fps (the model's default)")
    else:
        src_fps = float(info.fps)
    out_fps = float(fps or src_fps)
    if info.kind == "image":
        if frames not in (None, 1):
            raise BadInputError(f"{source} is one image: it encodes to 1 frame, not {frames}")
        if start:
            raise BadInputError("--start does not apply to a single image")
    if size is not None:
        check_size(family, *size)
    w, h = vio.fit_size(info.width, info.height, family.size_multiple, size, what=str(source))
    if (w, h) != (info.width, info.height):
        how = "resized and center-cropped" if size is not None else "center-cropped"
        notes.append(f"{info.width}x{info.height} {how} to {w}x{h} (multiple of {family.size_multiple} for {family.name})")
    avail = vio.frames_available(info, start, out_fps)
    if avail is not None:
        _check_available(source, avail, frames)
    return EncodePlan(source, info, family, start, out_fps, src_fps, frames, w, h, notes, background)


def _check_available(source: str, avail: int, frames: int | None) -> None:
    if avail <= 0:
        raise BadInputError(f"{source}: no frames to encode (zero-frame input or --start past the end)")
    if frames is not None and avail < frames:
        raise BadInputError(f"{source}: only {avail} frames available, --frames {frames} requested")


def frame_chunks(plan: EncodePlan) -> tuple[Iterator[list], dict]:
    """Chunks of frames the causal VAE takes (1, then 4s), resized; ``stats`` fills as it goes.

    Stops at ``plan.frames`` or at the last complete chunk; trailing frames that cannot make a
    complete group of 4 are dropped and counted in ``stats['dropped']``; what reading did
    (transparency composited...) is in ``stats['notes']``.
    """
    stats: dict = {"frames": 0, "dropped": 0, "notes": []}

    def gen():
        stream = vio.iter_frames(plan.source, plan.info, plan.start, plan.fps, background=plan.background,
                                 notices=stats["notes"])
        want = 1
        buf: list = []
        for frame in stream:
            if plan.frames is not None and stats["frames"] >= plan.frames:
                stats["dropped"] += 1
                continue
            buf.append(vio.resize_crop(frame, plan.width, plan.height))
            if len(buf) == want:
                stats["frames"] += len(buf)
                yield buf
                buf, want = [], 4
        stats["dropped"] += len(buf)

    return gen(), stats


def source_sha256(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in vio.frame_files(p):  # the order they are read in
            h.update(f.name.encode())
            h.update(sha256_file(f).encode())
        return h.hexdigest()
    return sha256_file(p)


def encode(
    bundle: "ModelBundle",
    plan: EncodePlan,
    progress: Callable[[int], None] | None = None,
) -> tuple[Artifact, list[str]]:
    """Encode per plan; returns the latent artifact and notes (what was trimmed)."""
    import numpy as np
    import torch

    from wanctl.core.models.codec import encode_chunks

    vae = bundle.vae()
    chunks, stats = frame_chunks(plan)
    first_frame: list = []

    def remember_first(chunks: Iterator[list]) -> Iterator[list]:
        for chunk in chunks:
            if not first_frame:
                first_frame.append(chunk[0])
            yield chunk

    try:
        latents = encode_chunks(vae, remember_first(chunks), progress)
    except ValueError:
        raise BadInputError(f"{plan.source}: no frames to encode (zero-frame input or --start past the end)") from None
    notes = list(plan.notes) + stats["notes"]
    n = stats["frames"]
    if n == 0:
        raise BadInputError(f"{plan.source}: no frames to encode (zero-frame input or --start past the end)")
    if plan.frames is not None and n < plan.frames:
        raise BadInputError(f"{plan.source}: only {n} frames available, --frames {plan.frames} requested")
    if stats["dropped"] and plan.frames is None:
        notes.append(f"kept {n} frames (4n+1); dropped {stats['dropped']} trailing frame(s)")
    ff = torch.from_numpy(np.array(first_frame[0], dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).contiguous()
    meta = new_meta(
        "latent",
        family=plan.family.name,
        command="encode",
        noise_level=0.0,
        video={"width": plan.width, "height": plan.height, "frames": n, "fps": plan.fps},
        model=bundle.record(["vae"]),
        params={
            "frames": n,
            "start": plan.start,
            "fps": plan.fps,
            "source_fps": plan.source_fps,
            "source_size": [plan.info.width, plan.info.height],
            "size": [plan.width, plan.height],
            "resize": "cover+center-crop" if plan.resized else None,
            "background": "#{:02x}{:02x}{:02x}".format(*plan.background),
            "vae_tiling": bool(bundle.options.vae_tiling),
            "vae_dtype": bundle.options.vae_dtype,
            "posterior": "mean",
        },
        inputs=[input_record("source", plan.source, source_sha256(plan.source), kind=plan.info.kind)],
    )
    return Artifact({"latents": latents.cpu().contiguous(), "first_frame": ff}, meta), notes


def check_vae(art: Artifact, bundle: "ModelBundle", where: str) -> None:
    """A latent only makes sense with the VAE that produced it."""
    rec = ((art.meta.get("model") or {}).get("components") or {}).get("vae")
    if rec and rec != bundle.fingerprint("vae"):
        raise BadInputError(
            f"{where}: latent was made with another VAE (fingerprint {rec}, model has {bundle.fingerprint('vae')}); "
            "use the model it was encoded with"
        )


def decode(
    bundle: "ModelBundle",
    artifact: Artifact,
    index: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Iterator["np.ndarray"]:
    """Yield uint8 frames of one video of the artifact's batch (refused if the latent was made
    with another VAE than the model's)."""
    from wanctl.core.models.codec import decode_latents

    check_vae(artifact, bundle, artifact.path or "<stdin>")
    lat = artifact.latents[index : index + 1]
    return decode_latents(bundle.vae(), lat, progress)


def write_latent(bundle: "ModelBundle", art: Artifact, output: str, *, video: str | None = None, fps: float = 16,
                 force: bool = False, progress=None) -> None:
    """Write a generated latent and, with ``video``, its decode: committed together, so an
    interrupted or failed run leaves both outputs or neither (``--decode`` of t2v and flf2v)."""
    from wanctl.core.files import together
    from wanctl.core.io.artifact import write_artifact

    with together():
        write_artifact(output, art, force=force)
        if video:
            decode_to_file(bundle, art, video, fps, force=force, progress=progress)


def decode_to_file(bundle: "ModelBundle", art: Artifact, path: str, fps: float, *, force: bool = False,
                   progress=None) -> None:
    """Decode a latent artifact straight to a video file (``--decode`` of the generating commands)."""
    with vio.VideoWriter(path, fps, force=force) as w:
        for f in decode(bundle, art, progress=progress):
            w.write(f)
