"""`wanctl encode`: video, frames folder or image -> normalized latent artifact."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from wanctl.commands._options import (
    positive,
    BackgroundOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    VaeDtypeOpt,
    VaeTilingOpt,
    load_options,
    parse_background,
    parse_size,
)
from wanctl.commands._report import describe_output, emit_json, handle_errors, info, notice, progress


@handle_errors
def encode(
    source: Annotated[str, typer.Argument(help="Video (mp4, webm, gif...), folder of frames, or one image.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Latent artifact: .safetensors, .zarr, or - for stdout.", show_default=False)],
    model: ModelOpt = None,
    frames: Annotated[Optional[int], typer.Option("--frames", "-n", help="Exact frame count (4n+1). Default: as many as fit (trailing frames beyond the last 4n+1 are dropped, with a note).")] = None,
    start: Annotated[float, typer.Option("--start", help="Start time in seconds.")] = 0.0,
    fps: Annotated[Optional[float], typer.Option("--fps", callback=positive, help="Resample to this frame rate (the source frame showing at each output time). Default: the source's; for images, folders and animations whose frame durations vary, the model's default.")] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="WIDTHxHEIGHT: resize to cover, then center-crop. Default: source size center-cropped to the family's multiple (16 for A14B, 32 for ti2v-5b).")] = None,
    background: BackgroundOpt = "black",
    vae_tiling: VaeTilingOpt = False,
    device: DeviceOpt = None,
    vae_dtype: VaeDtypeOpt = "fp32",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Encode a video to a normalized latent artifact (posterior mean of the model's VAE).

    Loads the VAE only. Metadata records the source sha256, pixel size, frames and fps. Inputs are
    read as a viewer shows them: EXIF orientation applied, transparency composited on
    --background, animations and variable-frame-rate videos taken at their real frame times.

    Examples:

      wanctl encode clip.mp4 -o clip.safetensors

      wanctl encode clip.mp4 --frames 81 --fps 16 --size 832x480 -o clip.zarr

      wanctl encode frames/ --fps 24 -o - | wanctl info -
    """
    from wanctl.core.io.artifact import check_output, write_artifact
    from wanctl.core.workflows.encode import encode as run_encode
    from wanctl.core.workflows.encode import plan_encode
    from wanctl.core.models.bundle import open_bundle

    bg = parse_background(background)
    check_output(output, force)
    opts = load_options(device, vae_dtype=vae_dtype, vae_tiling=vae_tiling)
    bundle = open_bundle(model, notice=notice, options=opts)
    plan = plan_encode(source, bundle.family, frames=frames, start=start, fps=fps, size=parse_size(size),
                       preset=bundle.preset, background=bg)
    for n in plan.notes:
        notice(n)
    with progress("encoding", plan.frames or plan.info.frames, "frames") as advance:
        art, notes = run_encode(bundle, plan, progress=advance)
    for n in notes[len(plan.notes):]:
        notice(n)
    write_artifact(output, art, force=force)
    v = art.meta["video"]
    lat = art.latents
    if as_json:
        emit_json({"output": describe_output(output), "kind": "latent", "family": bundle.family.name,
                   "shape": list(lat.shape), "video": v})
    else:
        info(f"wrote {describe_output(output)}: {v['frames']} frames {v['width']}x{v['height']} @ {v['fps']:g} fps "
             f"-> latents {tuple(lat.shape)} ({bundle.family.name})")
