"""`wanctl preview`: look at any latent, noise or trajectory without decoding it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from wanctl.commands._options import DeviceOpt, ForceOpt, JsonOpt, ModelOpt, load_options, positive
from wanctl.commands._report import emit_json, handle_errors, info, notice


def _pick(n: int, spec: str | None) -> list[int]:
    from wanctl.core.errors import BadInputError

    if not spec:
        return list(range(n))
    try:
        idx = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise BadInputError(f"--frames {spec!r} must be a comma-separated list of frame numbers") from None
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise BadInputError(f"--frames {bad[0]} out of range (0..{n - 1})")
    return idx


@handle_errors
def preview(
    artifact: Annotated[str, typer.Argument(help="Latent, noise or trajectory artifact, or a ComfyUI .latent.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="sheet.png (contact sheet) or anim.gif.", show_default=False)],
    frames: Annotated[Optional[str], typer.Option("--frames", help="Latent frames to show, e.g. 0,4,8 (with --vae: pixel frames). Default: all.")] = None,
    scale: Annotated[Optional[int], typer.Option("--scale", min=1, help="Upscale factor. Default: the VAE stride (pixel size), or 1 with --vae.")] = None,
    index: Annotated[int, typer.Option("--index", help="Video of a batched artifact.")] = 0,
    vae: Annotated[bool, typer.Option("--vae", help="Decode exactly with the VAE instead of the instant linear preview.")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    fps: Annotated[float, typer.Option("--fps", callback=positive, help="GIF frame rate.")] = 8.0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Preview an artifact as a contact sheet (PNG) or animation (GIF), instantly, without the VAE.

    Each latent pixel is mapped linearly to RGB (the per-family factors ComfyUI uses), upscaled
    to the pixel grid. A trajectory shows one row per saved step. --vae decodes exactly instead.

    Examples:

      wanctl preview noise.safetensors -o noise.png

      wanctl preview traj.zarr -o traj.png --frames 0,2,4

      wanctl preview edit.safetensors -o edit.gif --vae
    """
    from pathlib import Path

    from wanctl.core.io import comfy
    from wanctl.core.io import preview as pv
    from wanctl.core.io.artifact import atomic_path, check_output_file
    from wanctl.core.io.inputs import read_input
    from wanctl.core.errors import BadInputError
    from wanctl.core.families import FAMILIES
    from wanctl.core.models.bundle import resolve_model

    kind = Path(output).suffix.lower()
    if kind not in (".png", ".gif"):
        raise BadInputError(f"output {output} must end in .png (contact sheet) or .gif (animation)")
    check_output_file(output, force)
    art = read_input(artifact, notice=notice)
    comfy.check_model_given(art, model)
    spec = resolve_model(model, family=art.family, recorded=art.meta.get("model"), notice=notice)
    art = comfy.to_normalized(art, spec)
    fam = FAMILIES[art.family or spec.family.name]
    if not 0 <= index < art.latents.shape[0]:
        raise BadInputError(f"--index {index} out of range: {art.latents.shape[0]} video(s)")
    if vae:
        from wanctl.core.workflows.encode import decode
        from wanctl.core.models.bundle import ModelBundle

        bundle = ModelBundle(spec, load_options(device))
        video = list(decode(bundle, art, index=index))
        pick = _pick(len(video), frames)
        rows = [[pv.upscale(video[i], scale or 1) for i in pick]]
        what = f"{len(pick)} decoded frame(s)"
    else:
        factors, bias = pv.rgb_factors(fam.vae, spec)
        states = pv.trajectory_states(art.tensors) if art.kind == "trajectory" else [("latents", art.latents)]
        up = scale or fam.stride[1]
        pick = _pick(states[0][1].shape[2], frames)
        rows = []
        for _, t in states:
            rgb = pv.latent_rgb(t[index], factors, bias)
            rows.append([pv.upscale(rgb[i], up) for i in pick])
        what = f"{len(rows)} row(s) x {len(pick)} latent frame(s), x{up}"
    from PIL import Image

    with atomic_path(output, force=force) as tmp:
        if kind == ".png":
            Image.fromarray(pv.contact_sheet(rows)).save(tmp, format="PNG")
        else:
            frames_out = [Image.fromarray(f) for row in rows for f in row]
            frames_out[0].save(tmp, format="GIF", save_all=True, append_images=frames_out[1:],
                               duration=max(20, round(1000 / fps)), loop=0)
    if as_json:
        emit_json({"output": output, "rows": len(rows), "frames": len(pick), "vae": vae})
    else:
        info(f"wrote {output}: {what}")
