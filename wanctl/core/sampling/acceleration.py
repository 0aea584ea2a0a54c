"""Speed options for the DiT: attention backends, torch.compile, and step caches.

Step caches go through diffusers' hooks (first-block cache, TaylorSeer, MagCache), but wanctl
does their step accounting itself. diffusers configures each hooked module with the pipeline's
total step count; an A14B expert only sees part of the steps, so its counters, MagCache's
retention window and ratio indexing drift (diffusers issue 14025). wanctl counts the model
evaluations each expert really gets (from the grid, the solver and the boundary), configures
each expert with its own count, and resets every hook's state at the start of each run.

MagCache needs per-step magnitude ratios of the model's residual. wanctl measures them itself
(a calibration run: uncached, recording ||last block out - first block in|| ratios per expert)
and stores them in the cache dir keyed by the expert's fingerprint and the grid; later runs
with the same model and grid use them.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import TYPE_CHECKING

from wanctl.core import trace
from wanctl.core.errors import BadInputError
from wanctl.core.sampling.schedule import Schedule, model_timestep, route_expert

if TYPE_CHECKING:  # pragma: no cover
    from wanctl.core.models.bundle import ModelBundle

CACHES = ("none", "first-block", "taylorseer", "magcache")
# backends that would download kernels from a hub at run time are not offered
ATTENTION_BACKENDS = ("native", "flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "flex", "sage", "sage_varlen",
                      "xformers", "_native_cudnn", "_native_efficient", "_native_flash", "_native_math")


# --------------------------------------------------------------------------- attention, compile


def set_attention(bundle: "ModelBundle", backend: str) -> None:
    if backend not in ATTENTION_BACKENDS:
        raise BadInputError(f"unknown attention backend {backend!r}; use one of {', '.join(ATTENTION_BACKENDS)}")
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(backend))
    except (RuntimeError, ImportError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(f"attention backend {backend!r} is not available here: {first}") from None
    for expert in bundle.experts():
        bundle.transformer(expert).set_attention_backend(backend)


def compile_blocks(bundle: "ModelBundle") -> None:
    """torch.compile each transformer block (regional compilation: all blocks share one graph)."""
    for expert in bundle.experts():
        dit = bundle.transformer(expert)
        for block in dit.blocks:
            block.compile(fullgraph=False, dynamic=False)
    trace.event("compile", experts=len(bundle.experts()))


# --------------------------------------------------------------------------- step caches


def evaluation_levels(sigmas: list[float], solver: str) -> list[float]:
    """The noise levels a solver evaluates the model at, in order."""
    levels = []
    for i in range(len(sigmas) - 1):
        s, h = sigmas[i], sigmas[i + 1] - sigmas[i]
        if solver in ("euler", "unipc"):
            levels.append(s)
        elif solver == "midpoint":
            levels += [s, s + 0.5 * h]
        elif solver == "fireflow":
            levels += ([s] if i == 0 else []) + [s + 0.5 * h]
        else:
            raise BadInputError(f"unknown solver {solver!r}")
    return levels


def evaluations_per_expert(schedule: Schedule, solver: str, boundary: float | None,
                           segments: list[tuple[int, int, str | None]] | None = None) -> dict[str, int]:
    """How many times each expert is evaluated (per CFG branch) over a run.

    ``segments`` (start step, end step, forced expert) describe runs split into several solver
    calls (half-frame): each segment restarts the solver, e.g. FireFlow's first evaluation.
    """
    counts: dict[str, int] = {}
    sig = list(schedule.sigmas)
    for start, end, forced in segments or [(0, len(sig) - 1, None)]:
        for s in evaluation_levels(sig[start : end + 1], solver):
            e = forced or route_expert(model_timestep(s), boundary)
            counts[e] = counts.get(e, 0) + 1
    return counts


def _calibration_key(bundle: "ModelBundle", expert: str, schedule: Schedule, solver: str) -> str:
    from wanctl.core.io import cache

    return cache.key_of({"expert": bundle.fingerprint(expert), "sigmas": list(schedule.sigmas), "solver": solver,
                         "boundary": bundle.spec.boundary})


def _calibration_path(key: str):
    from wanctl.core.io.cache import root

    return root() / "magcache" / f"{key}.json"


def load_calibration(bundle: "ModelBundle", schedule: Schedule, solver: str) -> dict[str, list[float]] | None:
    out = {}
    for e in bundle.experts():
        p = _calibration_path(_calibration_key(bundle, e, schedule, solver))
        try:
            out[e] = [float(x) for x in json.loads(p.read_text())["ratios"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return out


def save_calibration(bundle: "ModelBundle", schedule: Schedule, solver: str, ratios: dict[str, list[float]]) -> None:
    import os

    for e, r in ratios.items():
        p = _calibration_path(_calibration_key(bundle, e, schedule, solver))
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"ratios": r, "expert": e, "steps": schedule.num_steps, "solver": solver}))
        os.replace(tmp, p)


@contextmanager
def record_magnitudes(bundle: "ModelBundle"):
    """Record, per expert, the mean token norm of the blocks' residual (last block out minus
    first block in) at every conditional evaluation; yields {expert: [ratio per evaluation]}."""
    ratios: dict[str, list[float]] = {}
    handles = []
    for e in bundle.experts():
        dit = bundle.transformer(e)
        state = {"inp": None, "prev": None}
        ratios[e] = []

        def pre(module, args, kwargs, state=state, dit=dit):
            if getattr(dit, "_wanctl_branch", "cond") == "uncond":
                return
            state["inp"] = kwargs.get("hidden_states", args[0] if args else None)

        def post(module, args, kwargs, output, state=state, e=e, dit=dit):
            import torch

            branch = getattr(dit, "_wanctl_branch", "cond")
            if branch == "uncond":
                return  # calibrate on the conditional branch only
            out = output[0] if isinstance(output, tuple) else output
            res = (out - state["inp"]).float()
            if branch == "cfg":  # [cond, uncond] in one batch
                res = res[: res.shape[0] // 2]
            norm = torch.linalg.norm(res, dim=-1)
            if state["prev"] is None:
                ratios[e].append(1.0)
            else:
                ratios[e].append(float((norm / (state["prev"] + 1e-8)).mean()))
            state["prev"] = norm

        handles.append(dit.blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(dit.blocks[-1].register_forward_hook(post, with_kwargs=True))
    try:
        yield ratios
    finally:
        for h in handles:
            h.remove()


def configure_cache(bundle: "ModelBundle", mode: str, evaluations: dict[str, int], *, threshold: float | None = None,
                    interval: int | None = None, mag_ratios: dict[str, list[float]] | None = None) -> dict:
    """Install the step cache on each expert with that expert's own evaluation count."""
    if mode not in CACHES:
        raise BadInputError(f"unknown cache {mode!r}; use one of {', '.join(CACHES)}")
    settings = {"mode": mode}
    for e in bundle.experts():
        dit = bundle.transformer(e)
        if dit.is_cache_enabled:
            dit.disable_cache()
        n = evaluations.get(e, 0)
        if mode == "none" or n == 0:
            continue
        import torch

        if mode == "first-block":
            from diffusers import FirstBlockCacheConfig

            cfg = FirstBlockCacheConfig(threshold=0.05 if threshold is None else threshold)
            settings["threshold"] = cfg.threshold
        elif mode == "taylorseer":
            from diffusers import TaylorSeerCacheConfig

            # diffusers' default patterns ("^blocks.*attn") never fully match Wan's attn1 / attn2 names,
            # so name the modules whose outputs are predicted between full computations
            cfg = TaylorSeerCacheConfig(cache_interval=interval or 3, disable_cache_before_step=min(3, n),
                                        disable_cache_after_step=max(n - 2, 0), max_order=1,
                                        taylor_factors_dtype=torch.float32,
                                        cache_identifiers=[r"^blocks\.\d+\.(attn1|attn2|ffn)$"])
            settings["interval"] = cfg.cache_interval
        else:
            from diffusers import MagCacheConfig

            if not mag_ratios or e not in mag_ratios:
                raise BadInputError("magcache needs calibration ratios (run once to calibrate)")
            r = mag_ratios[e]
            if len(r) != n:
                raise BadInputError(f"magcache calibration has {len(r)} steps for {e}, this run evaluates it {n} times")
            cfg = MagCacheConfig(threshold=0.06 if threshold is None else threshold, max_skip_steps=2, retention_ratio=0.2,
                                 num_inference_steps=n, mag_ratios=r)
            settings["threshold"] = cfg.threshold
        dit.enable_cache(cfg)
        settings[f"{e}_evaluations"] = n
    reset(bundle)
    return settings


def reset(bundle: "ModelBundle") -> None:
    """Clear every hook's state (start of a run, and at an expert switch)."""
    for e in bundle.experts():
        if e in bundle._loaded:
            dit = bundle._loaded[e]
            if dit.is_cache_enabled:
                dit._reset_stateful_cache()


@contextmanager
def accelerated(bundle: "ModelBundle", schedule: Schedule, solver: str, *, cache: str = "none",
                threshold: float | None = None, interval: int | None = None, attention: str | None = None,
                compile: bool = False, segments=None, notice=None):
    """Set up attention, compilation and the step cache for one run; yields the settings (for
    the artifact's metadata). A MagCache run without stored calibration runs uncached and
    calibrates (saved when the run ends)."""
    if cache not in CACHES:
        raise BadInputError(f"unknown cache {cache!r}; use one of {', '.join(CACHES)}")
    settings: dict = {"cache": cache}
    if attention:
        set_attention(bundle, attention)
        settings["attention"] = attention
    if compile:
        compile_blocks(bundle)
        settings["compile"] = True
    evals = evaluations_per_expert(schedule, solver, bundle.spec.boundary, segments)
    if cache == "magcache":
        ratios = load_calibration(bundle, schedule, solver)
        if ratios is None:
            if notice:
                notice("magcache: no calibration for this model and grid yet; this run is uncached and calibrates it")
            configure_cache(bundle, "none", evals)
            with record_magnitudes(bundle) as measured:
                settings["cache"] = "magcache-calibration"
                yield settings
            if all(len(measured[e]) == evals.get(e, 0) for e in measured):
                save_calibration(bundle, schedule, solver, {e: r for e, r in measured.items() if r})
            return
        settings.update(configure_cache(bundle, cache, evals, threshold=threshold, mag_ratios=ratios))
    else:
        settings.update(configure_cache(bundle, cache, evals, threshold=threshold, interval=interval))
    try:
        yield settings
    finally:
        reset(bundle)
