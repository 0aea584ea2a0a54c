"""Speed options: per-expert step accounting for the step caches, attention backends, compile."""

from __future__ import annotations

import pytest
import torch

from wanctl.core.errors import BadInputError
from wanctl.core.models.text import encode_prompts
from wanctl.core.sampling import acceleration as acc
from wanctl.core.sampling.plan import Guidance, plan_run
from wanctl.core.sampling.schedule import make_schedule
from wanctl.core.workflows.t2v import run_t2v

G = Guidance(4.0, 3.0)


def _plan(bundle, sched, solver="unipc", half=False, **kw):
    return plan_run(bundle.spec, "t2v", schedule=sched, frames=9, width=64, height=64, guidance=G, solver=solver,
                    half_frame=half, **kw)


def _run(bundle, sched, solver="unipc", half=False, plan_kw=None, **cache):
    plan = _plan(bundle, sched, solver, half, **(plan_kw or {}))
    emb = encode_prompts(bundle, ["a cat", "bad"])
    with acc.accelerated(bundle, **cache) as caches:
        res = run_t2v(bundle, plan, embeds=emb["a cat"], negative=emb["bad"], seed=2, caches=caches)
    return res, caches.settings


@pytest.mark.parametrize("solver,half", [("unipc", False), ("midpoint", False), ("fireflow", True), ("euler", True)])
def test_evaluations_per_expert_match_the_run(bundles, solver, half):
    b = bundles("tiny-t2v-a14b")
    sched = make_schedule(10, 12.0)
    res, _ = _run(b, sched, solver, half)
    counts = _plan(b, sched, solver, half).evaluations_per_expert()
    seen = {}
    for c in res.calls:
        seen[c.expert] = seen.get(c.expert, 0) + 1
    assert {e: n * 2 for e, n in counts.items()} == seen  # two CFG branches per evaluation


def _count_full_computes(bundle):
    counts = {}
    handles = [bundle.transformer(e).blocks[-1].ffn.net[0].register_forward_hook(
        lambda m, a, o, e=e: counts.__setitem__(e, counts.get(e, 0) + 1)) for e in bundle.experts()]
    return counts, handles


def test_magcache_per_expert_accounting_and_no_carry_over(bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("WANCTL_CACHE_DIR", str(tmp_path))  # a fresh calibration store
    b = bundles("tiny-t2v-a14b")
    sched = make_schedule(20, 12.0, "diffusers")
    ref, _ = _run(b, sched)
    counts, handles = _count_full_computes(b)
    calib, settings = _run(b, sched, cache="magcache")
    assert settings["cache"] == "magcache-calibration" and torch.equal(calib.latents, ref.latents)
    stored = acc.load_calibration(b, _plan(b, sched))
    evals = _plan(b, sched).evaluations_per_expert()
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


@pytest.mark.parametrize("mode", ["first-block", "taylorseer"])
def test_other_caches_skip_work(bundles, mode):
    b = bundles("tiny-t2v-a14b")
    sched = make_schedule(12, 12.0)
    counts, handles = _count_full_computes(b)
    res, settings = _run(b, sched, cache=mode, threshold=0.5 if mode == "first-block" else None)
    total = sum(counts.values())
    for h in handles:
        h.remove()
    assert total < 2 * 12 and settings["cache"] == mode


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
    with pytest.raises(BadInputError, match="unknown step cache"):
        with acc.accelerated(b, cache="teacache"):
            pass
