"""Speed options: per-expert step accounting for the step caches, attention backends, compile."""

from __future__ import annotations

import pytest
import torch

from wanctl.core.sampling import acceleration as acc
from wanctl.core.errors import BadInputError
from wanctl.core.sampling.velocity import Guidance
from wanctl.core.sampling.schedule import make_schedule
from wanctl.core.workflows.t2v import plan_t2v, run_t2v
from wanctl.core.models.text import encode_prompts

G = Guidance(4.0, 3.0)


def _run(bundle, sched, solver="unipc", half=False, **cache):
    plan = plan_t2v(bundle, sched, frames=9, width=64, height=64, guidance=G, solver=solver, half_frame=half,
                    boundary=bundle.spec.boundary)
    emb = encode_prompts(bundle, ["a cat", "bad"])
    segs = [(0, plan.switch, "transformer"), (plan.switch, sched.num_steps, None)] if half else None
    with acc.accelerated(bundle, sched, solver, segments=segs, **cache) as settings:
        res = run_t2v(bundle, plan, embeds=emb["a cat"], negative=emb["bad"], guidance=G, seed=2, width=64, height=64,
                      boundary=bundle.spec.boundary)
    return res, settings


@pytest.mark.parametrize("solver,half", [("unipc", False), ("midpoint", False), ("fireflow", True), ("euler", True)])
def test_evaluations_per_expert_match_the_run(bundles, solver, half):
    b = bundles("tiny-t2v-a14b")
    sched = make_schedule(10, 12.0)
    res, _ = _run(b, sched, solver, half)
    segs = None
    if half:
        plan = plan_t2v(b, sched, frames=9, width=64, height=64, guidance=G, solver=solver, half_frame=True, boundary=b.spec.boundary)
        segs = [(0, plan.switch, "transformer"), (plan.switch, 10, None)]
    counts = acc.evaluations_per_expert(sched, solver, b.spec.boundary, segs)
    seen = {}
    for expert, _, _ in res.calls:
        seen[expert] = seen.get(expert, 0) + 1
    assert {e: n * 2 for e, n in counts.items()} == seen  # two CFG branches per evaluation


def _count_full_computes(bundle):
    counts = {}
    handles = [bundle.transformer(e).blocks[-1].ffn.net[0].register_forward_hook(
        lambda m, a, o, e=e: counts.__setitem__(e, counts.get(e, 0) + 1)) for e in bundle.experts()]
    return counts, handles


def test_magcache_per_expert_accounting_and_no_carry_over(bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("WANCTL_CACHE_DIR", str(tmp_path))  # a fresh calibration store
    b = bundles("tiny-t2v-a14b")
    sched = make_schedule(20, 12.0)
    ref, _ = _run(b, sched)
    counts, handles = _count_full_computes(b)
    calib, settings = _run(b, sched, cache="magcache")
    assert settings["cache"] == "magcache-calibration" and torch.equal(calib.latents, ref.latents)
    stored = acc.load_calibration(b, sched, "unipc")
    evals = acc.evaluations_per_expert(sched, "unipc", b.spec.boundary)
    assert {e: len(r) for e, r in stored.items()} == evals == {"transformer": 13, "transformer_2": 7}
    counts.clear()
    first, settings = _run(b, sched, cache="magcache", threshold=0.5)
    assert settings["transformer_evaluations"] == 13 and settings["transformer_2_evaluations"] == 7
    skipped = {e: 2 * evals[e] - counts.get(e, 0) for e in evals}
    assert skipped["transformer"] > 0 and skipped["transformer_2"] > 0  # both experts really cache
    second, _ = _run(b, sched, cache="magcache", threshold=0.5)
    assert torch.equal(first.latents, second.latents)  # state reset between runs: no carry-over
    for h in handles:
        h.remove()
    acc.configure_cache(b, "none", evals)


@pytest.mark.parametrize("mode", ["first-block", "taylorseer"])
def test_other_caches_skip_work(bundles, mode):
    b = bundles("tiny-t2v-a14b")
    sched = make_schedule(12, 12.0)
    counts, handles = _count_full_computes(b)
    res, settings = _run(b, sched, cache=mode, threshold=0.5 if mode == "first-block" else None)
    total = sum(counts.values())
    for h in handles:
        h.remove()
    acc.configure_cache(b, "none", {})
    assert total < 2 * 12 and settings["mode"] == mode


def test_attention_backends_and_compile(bundles):
    b = bundles("tiny-ti2v-5b")
    with pytest.raises(BadInputError, match="unknown attention backend"):
        acc.set_attention(b, "flash_hub")  # would download kernels: not offered
    with pytest.raises(BadInputError, match="not available here"):
        acc.set_attention(b, "xformers")  # not installed in this environment
    acc.set_attention(b, "native")
    from wanctl.core.models.bundle import ModelBundle

    fresh = ModelBundle(b.spec, b.options)
    acc.compile_blocks(fresh)
    assert all(blk._compiled_call_impl is not None for blk in fresh.transformer().blocks)
    with pytest.raises(BadInputError, match="unknown cache"):
        with acc.accelerated(b, make_schedule(4, 5.0), "unipc", cache="teacache"):
            pass
