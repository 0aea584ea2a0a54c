"""`wanctl export --comfy`: a latent artifact as a ComfyUI .latent file."""

from __future__ import annotations

from typing import Annotated

import typer

from wanctl.commands._options import ForceOpt, JsonOpt, ModelOpt
from wanctl.commands._report import emit_json, handle_errors, info, notice


@handle_errors
def export(
    latent: Annotated[str, typer.Argument(help="Latent artifact (.safetensors, .zarr, or -).", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Output .latent file (or - for stdout).", show_default=False)],
    comfy: Annotated[bool, typer.Option("--comfy", help="Write a ComfyUI .latent (raw VAE space + version marker). Currently the only format.")] = False,
    model: ModelOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a latent for ComfyUI: `latent_tensor` in raw VAE space (normalized * std + mean, with
    the model's VAE statistics) plus the `latent_format_version_0` marker. Reads only the VAE
    config, no weights. `.latent` files are accepted as inputs wherever a latent is.

    Example:

      wanctl export --comfy edit.safetensors -o edit.latent
    """
    from wanctl.core.io import comfy as comfy_io
    from wanctl.core.io.artifact import check_family, check_output, check_output_file, read_artifact
    from wanctl.core.errors import BadInputError
    from wanctl.core.models.bundle import ModelBundle, resolve_model
    from wanctl.core.workflows.encode import check_vae

    if not comfy:
        raise BadInputError("choose an export format: --comfy")
    if output != "-" and not comfy_io.is_comfy(output):
        raise BadInputError(f"output {output} must end in .latent")
    check_output(output, force) if output == "-" else check_output_file(output, force)
    art = read_artifact(latent, kinds=("latent", "noise"), notice=notice)
    spec = resolve_model(model, family=art.family, recorded=art.meta.get("model"), notice=notice)
    check_family(art, spec.family.name, where=latent)
    check_vae(art, ModelBundle(spec), latent)  # raw VAE space is only meaningful for the VAE that made it
    comfy_io.write_comfy(output, art, spec.vae_config, force=force)
    if as_json:
        emit_json({"output": output, "format": "comfyui-latent", "shape": list(art.latents.shape)})
    elif output != "-":
        info(f"wrote {output} (ComfyUI latent, raw {art.family} VAE space, shape {tuple(art.latents.shape)})")
