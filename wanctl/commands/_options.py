"""Options the commands share (Typer declarations with their help panels) and their parsing,
checked before any model loads."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Model: a diffusers-layout or official Wan2.2 folder, a ComfyUI DiT file (.safetensors, fp8_scaled or .gguf), a JSON model description, or a built-in name (see `wanctl model list`). Default: $WANCTL_MODEL.",
        show_default=False,
    ),
]


DeviceOpt = Annotated[
    Optional[str],
    typer.Option("--device", help="Torch device (cuda, cuda:1, cpu, mps). Default: $WANCTL_DEVICE, else cuda if available."),
]


DtypeOpt = Annotated[str, typer.Option("--dtype", help="DiT and text-encoder precision: bf16, fp16 or fp32.")]


VaeDtypeOpt = Annotated[str, typer.Option("--vae-dtype", help="VAE precision: fp32 (default), bf16 or fp16.")]


# quantized weights (wanctl/core/models/quantized.py); GGUF / fp8_scaled files are recognised by --model itself
WeightsDtypeOpt = Annotated[str, typer.Option("--weights-dtype", help="DiT weight storage: auto (the --dtype; fp8 and fp8_scaled files are dequantized to it) or fp8 (layer weights kept in float8_e4m3fn, each layer upcast to --dtype for its forward: about half the DiT memory of bf16, weights rounded to fp8; not for GGUF files, already quantized).")]


VaeTilingOpt = Annotated[
    bool, typer.Option("--vae-tiling", help="Encode/decode in overlapping spatial tiles to save memory at large sizes.")
]


ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs (a folder only when it holds a wanctl output: PNG frames, a zarr artifact, a model).")]


# many-output runs (a manifest): this process's share of the rows (wanctl/core/shard.py)
ShardOpt = Annotated[Optional[str], typer.Option("--shard", metavar="I/N", show_default=False, help="Make rows I, I+N, I+2N, ... (0-based) of the manifest or targets (0 <= I < N) and skip rows whose output exists (resume; --force recomputes). Default: the launcher's RANK/WORLD_SIZE (torchrun), SLURM_PROCID/SLURM_NTASKS or a Slurm job array's task, each with the same resume; else every row.")]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object per output artifact on stdout (on stderr when -o - sends the artifact there).")]


# LoRAs on the DiT (wanctl/core/models/lora.py), on every command that runs it
LORA = "LoRA"
LoraOpt = Annotated[Optional[list[str]], typer.Option("--lora", metavar="FILE[:STRENGTH]", rich_help_panel=LORA, show_default=False, help="Apply a LoRA (.safetensors: diffusers/PEFT, ComfyUI/lightx2v/Lightning diffusion_model.*, or musubi/kohya lora_unet_* keys) to every expert, at STRENGTH (default 1.0); repeatable.")]


LoraHighOpt = Annotated[Optional[list[str]], typer.Option("--lora-high", metavar="FILE[:STRENGTH]", rich_help_panel=LORA, show_default=False, help="A LoRA for the high-noise expert only (transformer; on ti2v-5b, its one expert); repeatable.")]


LoraLowOpt = Annotated[Optional[list[str]], typer.Option("--lora-low", metavar="FILE[:STRENGTH]", rich_help_panel=LORA, show_default=False, help="A LoRA for the low-noise expert only (A14B: transformer_2); repeatable.")]


LoraUnfusedOpt = Annotated[bool, typer.Option("--lora-unfused", rich_help_panel=LORA, help="Keep the LoRAs' low-rank pairs as PEFT adapters instead of fusing them into the weights (same result, a small cost per step; .diff deltas are always merged). Needed for GGUF experts.")]


def load_options(device: str | None, dtype: str = "bf16", vae_dtype: str = "fp32", vae_tiling: bool = False,
                 no_cache: bool = False, offload: str = "none", text_encoder_device: str | None = None,
                 lora: list[str] | None = None, lora_high: list[str] | None = None, lora_low: list[str] | None = None,
                 lora_unfused: bool = False, weights_dtype: str = "auto", parallel: str | None = None):
    from wanctl.core.env import default_device
    from wanctl.core.errors import BadInputError
    from wanctl.core.models.bundle import OFFLOAD_MODES, LoadOptions, parse_dtype
    from wanctl.core.models.lora import parse_specs

    loras = parse_specs(lora, lora_high, lora_low)  # files checked (header only) before any model loads

    if str(parse_dtype(dtype)) == "torch.float16":
        from wanctl.commands._report import warn

        warn("--dtype fp16: Wan2.2 is trained in bf16, and fp16 activations can overflow to NaN; prefer bf16 (or fp32)")
    parse_dtype(vae_dtype)
    if offload not in OFFLOAD_MODES:
        raise BadInputError(f"unknown --offload {offload!r}; use one of {', '.join(OFFLOAD_MODES)}")
    from wanctl.core.models.quantized import WEIGHTS_DTYPES

    if weights_dtype not in WEIGHTS_DTYPES:
        raise BadInputError(f"unknown --weights-dtype {weights_dtype!r}; use one of {', '.join(WEIGHTS_DTYPES)}")
    dev = device or default_device()
    _check_device(dev)
    layout = parse_parallel(parallel)
    if layout is not None:
        from wanctl.core.models.parallel import local_device

        if offload != "none":
            raise BadInputError("--parallel with --offload is not supported; use --offload none")
        dev = local_device(dev)
        if not layout.writes:  # the other ranks print errors only
            from wanctl.commands._report import quiet

            quiet()
    if weights_dtype == "fp8" and dev.startswith("mps"):
        raise BadInputError("--weights-dtype fp8: MPS has no float8 tensors; use --weights-dtype auto")
    if text_encoder_device:
        _check_device(text_encoder_device)
    return LoadOptions(device=dev, dtype=dtype, vae_dtype=vae_dtype, vae_tiling=vae_tiling, cache=not no_cache,
                       offload=offload, text_encoder_device=text_encoder_device, loras=loras,
                       lora_fused=not lora_unfused, weights_dtype=weights_dtype, parallel=layout)


ParallelOpt = Annotated[Optional[str], typer.Option("--parallel", metavar="ulysses=N[,cfg=2]", rich_help_panel="Memory and speed", show_default=False, help="One video across GPUs, under torchrun (nccl on CUDA, gloo on the CPU): ulysses=N splits the DiT's tokens over N ranks (diffusers context parallelism, both experts); cfg=2 computes the CFG branches on two rank groups. The launch has cfg x ulysses processes; every rank encodes the text and runs the VAE; rank 0 writes. See the README.")]


def parse_parallel(value: str | None):
    """--parallel -> a ParallelLayout (or None); the degrees are checked against the plan later
    (sampling.plan.with_parallel), still before any weights load."""
    from wanctl.core.models.parallel import parse_parallel as parse

    return parse(value)


def _check_device(dev: str) -> None:
    import torch

    from wanctl.core.errors import BadInputError

    try:
        d = torch.device(dev)
    except (RuntimeError, ValueError):
        raise BadInputError(f"unknown device {dev!r}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {dev} requested but CUDA is not available (use --device cpu)")


BackgroundOpt = Annotated[str, typer.Option("--background", help="Colour that transparent pixels of the input images are composited on: a name (black, white, grey...), #rrggbb or r,g,b.")]


def parse_background(value: str) -> tuple[int, int, int]:
    """--background -> (r, g, b); a bad colour is exit 3, before anything loads."""
    from wanctl.core.io.media import parse_color

    return parse_color(value)


def parse_size(value: str | None) -> tuple[int, int] | None:
    """'832x480' -> (832, 480)."""
    if value is None:
        return None
    from wanctl.core.errors import BadInputError

    try:
        w, h = value.lower().replace("*", "x").split("x")
        size = int(w), int(h)
    except ValueError:
        raise BadInputError(f"size {value!r} must look like WIDTHxHEIGHT, e.g. 832x480") from None
    if min(size) <= 0:
        raise BadInputError(f"size {value!r} must be positive")
    return size


# option panels of the generating commands' --help
SAMPLING, GUIDANCE, HALF_FRAME, SPEED, OUTPUT = "Sampling", "Guidance", "Half-frame", "Memory and speed", "Output"


# options shared by the generating commands
StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, max=1000, rich_help_panel=SAMPLING, show_default=False, help="Number of steps. Default: the model's presets (official: ti2v-5b 50, A14B 40); denoise / flf2v of a noise artifact: the noise's grid.")]


ShiftOpt = Annotated[Optional[float], typer.Option("--shift", rich_help_panel=SAMPLING, show_default=False, help="Flow shift of the grid. Default: the model's presets (official: ti2v-5b 5, t2v-a14b 12, i2v-a14b 5).")]


GridOpt = Annotated[Optional[str], typer.Option("--grid", rich_help_panel=SAMPLING, show_default=False, help="Noise grid: official (the official UniPC grid; the default, but a noise artifact given to denoise / flf2v keeps its own), diffusers (the stock pipelines' grid) or dpm (official dpm++ grid, starts at s = 1).")]


PresetOpt = Annotated[Optional[str], typer.Option("--preset", rich_help_panel=SAMPLING, show_default=False, help="A sampling recipe: lightning (4 Euler steps on the distilled grid 1, 0.9375, 0.8333, 0.625 without CFG, for Wan2.2-Lightning / lightx2v models and LoRAs). Fills in --sigmas, --solver and (where the command has it) --guidance unless given; takes no --steps/--shift/--grid.")]


def sampling_options(preset: str | None, *, steps=None, shift=None, grid=None, sigmas: str | None = None,
                     solver=None, guidance=None, guidance_low=None):
    """The sampling options as given, with the ``--preset`` recipe filling in the rest."""
    from wanctl.core.sampling.recipes import SamplingOptions, apply_recipe

    return apply_recipe(preset, SamplingOptions(steps=steps, shift=shift, grid=grid, sigmas=parse_sigmas(sigmas),
                                                solver=solver, guidance=guidance, guidance_low=guidance_low))


SigmasOpt = Annotated[Optional[str], typer.Option("--sigmas", rich_help_panel=SAMPLING, show_default=False, help="An exact list of noise levels, e.g. 1.0,0.9375,0.8333,0.625 (a final 0 is appended); replaces --steps/--shift/--grid.")]


SeedOpt = Annotated[Optional[int], typer.Option("--seed", min=0, max=2**64 - 1, rich_help_panel=SAMPLING, show_default=False, help="Seed of the starting noise (drawn on the CPU, so the same on every device). Default 0. denoise / flf2v: not with a noise artifact (it is the starting noise).")]


BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, rich_help_panel=SPEED, help="Targets per DiT batch.")]


GuidanceOpt = Annotated[Optional[float], typer.Option("--guidance", "-g", rich_help_panel=GUIDANCE, show_default=False, help="CFG scale of the high-noise expert (and of the low-noise one unless --guidance-low). Default: the model's presets.")]


GuidanceLowOpt = Annotated[Optional[float], typer.Option("--guidance-low", rich_help_panel=GUIDANCE, show_default=False, help="CFG scale of the low-noise expert (A14B).")]


NegativeOpt = Annotated[Optional[str], typer.Option("--negative-prompt", "-n", rich_help_panel=GUIDANCE, show_default=False, help="Negative prompt for CFG. Default: the official Wan negative prompt.")]


OffloadOpt = Annotated[str, typer.Option("--offload", rich_help_panel=SPEED, help="none; model (one big component on the device at a time: A14B holds one expert); group (DiT blocks moved to the device on demand: least memory, slowest).")]


TextEncoderDeviceOpt = Annotated[Optional[str], typer.Option("--text-encoder-device", rich_help_panel=SPEED, show_default=False, help="Run the umT5 text encoder here (e.g. cpu) instead of --device.")]


StepCacheOpt = Annotated[str, typer.Option("--step-cache", rich_help_panel=SPEED, help="Reuse DiT work between steps (diffusers hooks, configured per expert from the plan): none, first-block, taylorseer or magcache (calibrates itself on first use).")]


CacheThresholdOpt = Annotated[Optional[float], typer.Option("--cache-threshold", rich_help_panel=SPEED, show_default=False, help="first-block / magcache threshold (defaults 0.05 / 0.06): higher skips more.")]


CacheIntervalOpt = Annotated[Optional[int], typer.Option("--cache-interval", rich_help_panel=SPEED, show_default=False, help="taylorseer: full computations every N evaluations (default 3).")]


AttentionOpt = Annotated[Optional[str], typer.Option("--attention", rich_help_panel=SPEED, show_default=False, help="diffusers attention backend (native, flash, _flash_3, sage, xformers, flex...); default: torch SDPA.")]


CompileOpt = Annotated[bool, typer.Option("--compile", rich_help_panel=SPEED, help="torch.compile the DiT blocks (slow first run, faster steps on GPUs).")]


NoCacheOpt = Annotated[bool, typer.Option("--no-cache", rich_help_panel=SPEED, help="Neither read nor write the embedding / inversion caches ($WANCTL_NO_CACHE=1 does the same).")]


CfgBatchOpt = Annotated[bool, typer.Option("--cfg-batch", rich_help_panel=SPEED, help="Run all branches of one model evaluation (CFG conditional and unconditional; flf2v's forward and backward passes) as one batched DiT forward (same result, more memory). Off by default: on CPU it measured 0.96x, slower (benchmarks/cfg_batch.py); on a GPU run that script to decide.")]


DryRunOpt = Annotated[bool, typer.Option("--dry-run", rich_help_panel=OUTPUT, help="Print the run plan (each step's level, timestep, expert, frames, guidance, DiT forwards), then stop; loads no weights. With --json: one JSON object.")]


DecodeOpt = Annotated[Optional[str], typer.Option("--decode", rich_help_panel=OUTPUT, show_default=False, help="Also decode the result to this video (.mp4, .mov, .mkv, .m4v, .webm, .gif) or PNG frames folder.")]


def unit_interval(value: float | None) -> float | None:
    """Typer callback: a number in [0, 1] (the range is not drawn in --help, to keep it narrow)."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"{value} is not in [0, 1]")
    return value


def positive(value: float | None) -> float | None:
    """Typer callback: a finite number > 0 (frame rates)."""
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a finite number > 0")
    return value


def speed_options(cache: str, threshold: float | None, interval: int | None, attention: str | None, compile: bool):
    from wanctl.core.sampling.acceleration import SpeedOptions

    opts = SpeedOptions(cache, threshold, interval, attention, compile)
    opts.check()
    return opts


def parse_sigmas(value: str | None):
    if value is None:
        return None
    from wanctl.core.sampling.schedule import parse_sigmas as parse

    return parse(value)
