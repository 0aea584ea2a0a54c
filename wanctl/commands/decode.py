"""`wanctl decode`: latent artifact -> mp4 / webm / gif / folder of PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from wanctl.commands._options import (
    positive,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    VaeDtypeOpt,
    VaeTilingOpt,
    load_options,
)
from wanctl.commands._report import emit_json, handle_errors, info, notice, progress, warn


def _outputs(output: str, batch: int, index: Optional[int]) -> list[tuple[int, str]]:
    if index is not None or batch == 1:
        return [(index or 0, output)]
    p = Path(output)
    return [(i, str(p.with_name(f"{p.stem}-{i}{p.suffix}"))) for i in range(batch)]


@handle_errors
def decode(
    latent: Annotated[str, typer.Argument(help="Latent artifact (.safetensors, .zarr, or - for stdin).", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Output .mp4 (H.264, yuv420p; also .mov, .mkv, .m4v), .webm (VP9), .gif, or a folder name for PNG frames.", show_default=False)],
    model: ModelOpt = None,
    fps: Annotated[Optional[float], typer.Option("--fps", callback=positive, help="Frame rate. Default: from the artifact's metadata.")] = None,
    index: Annotated[Optional[int], typer.Option("--index", help="Decode only this video of a batched artifact (default: all, numbered -0, -1...).")] = None,
    vae_tiling: VaeTilingOpt = False,
    device: DeviceOpt = None,
    vae_dtype: VaeDtypeOpt = "fp32",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Decode a latent artifact to video with the model's VAE (streamed frame group by frame group).

    Without --model, the model recorded in the artifact is used when available, else the
    built-in of the artifact's family.

    Examples:

      wanctl decode edited.safetensors -o edited.mp4

      wanctl decode clip.zarr -o frames/ --fps 8

      wanctl encode clip.mp4 -o - | wanctl decode - -o roundtrip.mp4
    """
    from wanctl.core.io import video as vio
    from wanctl.core.io.artifact import check_family, check_output_file
    from wanctl.core.io.inputs import read_input
    from wanctl.core.workflows.encode import decode as run_decode
    from wanctl.core.errors import BadInputError
    from wanctl.core.models.bundle import open_bundle

    vio.output_kind(output)
    check_output_file(output.rstrip("/"), force)
    from wanctl.core.io import comfy
    
    art = read_input(latent, kinds=("latent", "noise"), notice=notice)
    comfy.check_model_given(art, model)
    batch = art.latents.shape[0]
    if index is not None and not 0 <= index < batch:
        raise BadInputError(f"--index {index} out of range: the artifact holds {batch} video(s)")
    outs = _outputs(output, batch, index)
    for _, o in outs[1:]:
        check_output_file(o, force)
    opts = load_options(device, vae_dtype=vae_dtype, vae_tiling=vae_tiling)
    bundle = open_bundle(model, family=art.family, recorded=art.meta.get("model"), notice=notice, options=opts)
    art = comfy.to_normalized(art, bundle.spec)
    check_family(art, bundle.family.name, where=latent)
    if art.meta.get("noise_level", 0) > 0:
        warn(f"decoding a noisy latent (noise level s = {art.meta['noise_level']:g}); expect noise in the video")
    rate = fps or (art.meta.get("video") or {}).get("fps") or bundle.preset.fps
    t = art.latents.shape[2]
    for i, out in outs:
        with progress(f"decoding {Path(out).name}", t, "latent frames") as advance:
            with vio.VideoWriter(out, rate, force=force) as w:
                for frame in run_decode(bundle, art, index=i, progress=advance):
                    w.write(frame)
        h, wd = frame.shape[:2]
        if as_json:
            emit_json({"output": out, "frames": w.count, "width": wd, "height": h, "fps": rate})
        else:
            info(f"wrote {out}: {w.count} frames {wd}x{h} @ {rate:g} fps")
