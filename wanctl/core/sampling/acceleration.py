"""Speed options for the DiT: attention backends, torch.compile, and step caches.

Step caches go through diffusers' hooks (first-block cache, TaylorSeer, MagCache), but wanctl
does their step accounting itself. diffusers configures each hooked module with the pipeline's
total step count; an A14B expert only sees part of the steps, so its counters, MagCache's
retention window and ratio indexing would drift. wanctl takes the evaluations each expert
really gets from the run plan and installs each expert's cache afresh at every plan segment
(each run, and each change of frame count) with that segment's count.

MagCache needs per-evaluation magnitude ratios of the model's residual. wanctl measures them
itself (a calibration run: uncached, recording ||last block out - first block in|| ratios per
expert) and stores them in the cache dir keyed by the expert's fingerprint and the plan's
steps; later runs of the same plan use them.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wanctl.core import trace
from wanctl.core.errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    from wanctl.core.models.bundle import ModelBundle
    from wanctl.core.sampling.plan import RunPlan

CACHES = ("none", "first-block", "taylorseer", "magcache")
# backends that would download kernels from a hub at run time are not offered
ATTENTION_BACKENDS = ("native", "flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "flex", "sage", "sage_varlen",
                      "xformers", "_native_cudnn", "_native_efficient", "_native_flash", "_native_math")


# --------------------------------------------------------------------------- attention, compile


def check_attention(backend: str) -> None:
    """The backend is one wanctl offers and its package is installed (checked before any load)."""
    if backend not in ATTENTION_BACKENDS:
        raise BadInputError(f"unknown attention backend {backend!r}; use one of {', '.join(ATTENTION_BACKENDS)}")
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(backend))
    except (RuntimeError, ImportError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(f"attention backend {backend!r} is not available here: {first}") from None


def set_attention(bundle: "ModelBundle", backend: str) -> None:
    check_attention(backend)
    for expert in bundle.experts():
        bundle.transformer(expert, activate=False).set_attention_backend(backend)


def compile_blocks(bundle: "ModelBundle") -> None:
    """torch.compile each transformer block (regional compilation: all blocks share one graph)."""
    for expert in bundle.experts():
        dit = bundle.transformer(expert, activate=False)
        for block in dit.blocks:
            block.compile(fullgraph=False, dynamic=False)
    trace.event("compile", experts=len(bundle.experts()))


# --------------------------------------------------------------------------- step caches


def _calibration_key(bundle: "ModelBundle", expert: str, plan: "RunPlan") -> str:
    from wanctl.core.io import cache

    # the evaluations an expert gets are fixed by the plan's levels, experts, solver and frames
    return cache.key_of({"expert": bundle.fingerprint(expert), "solver": plan.solver, "refine": plan.refine,
                         "latent_size": list(plan.latent_size), "cfg": plan.uses_cfg, "passes": plan.passes,
                         "steps": [(p.s, p.s_next, p.expert, p.frames, p.evaluations, p.restart) for p in plan.steps]})


def _calibration_path(key: str):
    from wanctl.core.io.cache import root

    return root() / "magcache" / f"{key}.json"


def _ratios_digest(ratios: list[float]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([float(x) for x in ratios]).encode()).hexdigest()


def load_calibration(bundle: "ModelBundle", plan: "RunPlan") -> dict[str, list[float]] | None:
    """Stored MagCache ratios for each expert the plan uses, or None if any is missing."""
    out = {}
    for e, n in plan.evaluations_per_expert().items():
        p = _calibration_path(_calibration_key(bundle, e, plan))
        try:
            entry = json.loads(p.read_text())
            ratios = [float(x) for x in entry["ratios"]]
            if entry.get("sha256") != _ratios_digest(ratios):
                raise ValueError("checksum")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # missing or corrupt: this run calibrates afresh
        if len(ratios) != n:
            return None
        out[e] = ratios
    return out


def save_calibration(bundle: "ModelBundle", plan: "RunPlan", ratios: dict[str, list[float]]) -> None:
    import os
    import tempfile
    from pathlib import Path

    for e, r in ratios.items():
        p = _calibration_path(_calibration_key(bundle, e, plan))
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)  # unique across nodes too
        os.close(fd)
        tmp = Path(name)
        tmp.write_text(json.dumps({"ratios": r, "sha256": _ratios_digest(r), "expert": e, "steps": plan.num_steps,
                                   "solver": plan.solver}))
        os.replace(tmp, p)


class MagnitudeRecorder:
    """Records, per expert, the mean token norm ratio of the blocks' residual (last block out
    minus first block in) between consecutive conditional evaluations: MagCache's calibration.
    The ratio chain restarts at every plan segment (a new frame count has no predecessor)."""

    def __init__(self, bundle: "ModelBundle", experts):
        experts = list(experts)
        self.ratios: dict[str, list[float]] = {e: [] for e in experts}
        self._state = {e: {"inp": None, "prev": None} for e in experts}
        self._handles = []
        self.active = True
        for e in experts:
            dit = bundle.transformer(e, activate=False)
            self._handles.append(dit.blocks[0].register_forward_pre_hook(self._pre(e, dit), with_kwargs=True))
            self._handles.append(dit.blocks[-1].register_forward_hook(self._post(e, dit), with_kwargs=True))

    def restart(self) -> None:
        for st in self._state.values():
            st["prev"] = None

    def _pre(self, e, dit):
        def hook(module, args, kwargs):
            if self.active and getattr(dit, "_wanctl_branch", "cond") != "uncond":
                self._state[e]["inp"] = kwargs.get("hidden_states", args[0] if args else None)

        return hook

    def _post(self, e, dit):
        def hook(module, args, kwargs, output):
            import torch

            branch = getattr(dit, "_wanctl_branch", "cond")
            if not self.active or branch == "uncond":
                return  # calibrate on the conditional branch only
            st = self._state[e]
            out = output[0] if isinstance(output, tuple) else output
            res = (out - st["inp"]).float()
            if branch == "batched":  # [cond, uncond] in one batch
                res = res[: res.shape[0] // 2]
            norm = torch.linalg.norm(res, dim=-1)
            self.ratios[e].append(1.0 if st["prev"] is None else float((norm / (st["prev"] + 1e-8)).mean()))
            st["prev"] = norm

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _cache_config(mode: str, n: int, *, threshold, interval, ratios):
    import torch

    if mode == "first-block":
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=0.05 if threshold is None else threshold)
    if mode == "taylorseer":
        from diffusers import TaylorSeerCacheConfig

        # diffusers' default patterns ("^blocks.*attn") never fully match Wan's attn1 / attn2 names,
        # so name the modules whose outputs are predicted between full computations
        return TaylorSeerCacheConfig(cache_interval=interval or 3, disable_cache_before_step=min(3, n),
                                     disable_cache_after_step=max(n - 2, 0), max_order=1,
                                     taylor_factors_dtype=torch.float32,
                                     cache_identifiers=[r"^blocks\.\d+\.(attn1|attn2|ffn)$"])
    from diffusers import MagCacheConfig

    return MagCacheConfig(threshold=0.06 if threshold is None else threshold, max_skip_steps=2, retention_ratio=0.2,
                          num_inference_steps=n, mag_ratios=ratios)


def disable_caches(bundle: "ModelBundle") -> None:
    for e in bundle.experts():
        if e in bundle._loaded and bundle._loaded[e].is_cache_enabled:
            bundle._loaded[e].disable_cache()


class StepCaches:
    """The step cache of one command, configured from the plan.

    ``begin_segment`` (called by the executor where each plan segment starts) installs each
    expert's cache afresh with that segment's evaluation count, so no state survives a new
    run (the next batch of targets), an expert switch or a change of frame count. MagCache's
    ratios are sliced per segment from the calibration of the whole plan.
    """

    def __init__(self, bundle: "ModelBundle", mode: str, *, threshold=None, interval=None, notice=None):
        if mode not in CACHES:
            raise BadInputError(f"unknown step cache {mode!r}; use one of {', '.join(CACHES)}")
        self.bundle, self.mode, self.threshold, self.interval, self.notice = bundle, mode, threshold, interval, notice
        self.ratios: dict[str, list[float]] | None = None
        self.recorder: MagnitudeRecorder | None = None
        self.settings: dict = {"cache": mode}
        self._plan = None  # the plan the caches were last prepared for
        self._calibrating = None  # the plan a calibration is being recorded for
        self._runs = 0

    def _prepare(self, plan: "RunPlan") -> None:
        """Once per plan: load (or start) the MagCache calibration."""
        self._plan = plan
        if self.mode != "magcache":
            return
        self.ratios = load_calibration(self.bundle, plan)
        if self.ratios is None and self.recorder is None:
            if self.notice:
                self.notice("magcache: no calibration for this model and plan yet; this run is uncached and calibrates it")
            self.recorder = MagnitudeRecorder(self.bundle, plan.evaluations_per_expert())
            self.settings["cache"] = "magcache-calibration"
            self._calibrating = plan

    def begin_segment(self, plan: "RunPlan", start: int, end: int) -> None:
        if self._plan is not plan:
            self._prepare(plan)
        if start == 0:
            self._runs += 1
            if self.recorder is not None and self._runs > 1:
                self.recorder.active = False  # calibrate on the first run only
        if self.recorder is not None:
            self.recorder.restart()
        disable_caches(self.bundle)
        if self.mode == "none" or self.recorder is not None:
            return
        before = plan.evaluations_per_expert(0, start)
        for e, n in plan.evaluations_per_expert(start, end).items():
            if n == 0:
                continue
            ratios = self.ratios[e][before.get(e, 0) : before.get(e, 0) + n] if self.ratios else None
            cfg = _cache_config(self.mode, n, threshold=self.threshold, interval=self.interval, ratios=ratios)
            self.bundle.transformer(e, activate=False).enable_cache(cfg)
            if self.mode in ("first-block", "magcache"):
                self.settings["threshold"] = cfg.threshold
            else:
                self.settings["interval"] = cfg.cache_interval
        for e, n in plan.evaluations_per_expert().items():
            self.settings[f"{e}_evaluations"] = n

    def close(self) -> None:
        disable_caches(self.bundle)
        if self.recorder is not None:
            self.recorder.close()
            plan = self._calibrating
            measured = self.recorder.ratios
            if plan is not None and all(len(measured.get(e, [])) == n for e, n in plan.evaluations_per_expert().items()):
                save_calibration(self.bundle, plan, {e: measured[e] for e in plan.evaluations_per_expert()})
            self.recorder = None


@contextmanager
def accelerated(bundle: "ModelBundle", *, cache: str = "none", threshold: float | None = None,
                interval: int | None = None, attention: str | None = None, compile: bool = False, notice=None):
    """Set up attention, compilation and the step cache for one command; yields the
    :class:`StepCaches` the executor configures per plan segment (its ``settings`` go into the
    artifact's metadata). A MagCache run without stored calibration runs uncached and
    calibrates (saved when the command's first run ends)."""
    caches = StepCaches(bundle, cache, threshold=threshold, interval=interval, notice=notice)
    if attention:
        set_attention(bundle, attention)
        caches.settings["attention"] = attention
    if compile:
        compile_blocks(bundle)
        caches.settings["compile"] = True
    try:
        yield caches
    finally:
        caches.close()


@dataclass(frozen=True)
class SpeedOptions:
    """The speed options of a generating command (``--step-cache``, ``--attention``, ...)."""

    cache: str = "none"
    threshold: float | None = None
    interval: int | None = None
    attention: str | None = None
    compile: bool = False

    def check(self) -> None:
        """Refuse bad values before any model loads."""
        if self.cache not in CACHES:
            raise BadInputError(f"unknown step cache {self.cache!r}; use one of {', '.join(CACHES)}")
        if self.attention is not None:
            check_attention(self.attention)
        if self.threshold is not None and self.cache not in ("first-block", "magcache"):
            raise BadInputError(f"--cache-threshold applies to --step-cache first-block or magcache, not {self.cache}")
        if self.interval is not None and self.cache != "taylorseer":
            raise BadInputError(f"--cache-interval applies to --step-cache taylorseer, not {self.cache}")
        if self.threshold is not None and not (self.threshold == self.threshold and 0 < self.threshold < float("inf")):
            raise BadInputError(f"--cache-threshold must be a finite number > 0, got {self.threshold}")
        if self.interval is not None and self.interval < 1:
            raise BadInputError(f"--cache-interval must be >= 1, got {self.interval}")

    def open(self, bundle: "ModelBundle", notice=None):
        return accelerated(bundle, cache=self.cache, threshold=self.threshold, interval=self.interval,
                           attention=self.attention, compile=self.compile, notice=notice)
