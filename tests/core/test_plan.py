"""The plan is the run: every DiT forward a run makes is the one its plan says, step by step.

A matrix of option combinations (families x solvers x half-frame / until x CFG truncation x
boundary x step caches x batch sizes x flf2v modes) runs on the tiny models with the model-call
trace switched on; the calls recorded (in the run state and in the WANCTL_TRACE file) must equal
the plan. Then one regression test for each bug the old, re-deriving code had.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wanctl.core import trace
from wanctl.core.models.text import encode_prompts
from wanctl.core.sampling import acceleration as acc
from wanctl.core.sampling.plan import Guidance, plan_run
from wanctl.core.sampling.schedule import make_schedule
from wanctl.core.workflows.denoise import NoiseSource, Target, run_denoise
from wanctl.core.workflows.flf2v import run_flf2v
from wanctl.core.workflows.t2v import run_t2v

W = H = 64
PROMPT, NEG = "a red circle moving right", "static"


def assert_calls_follow_plan(plan, calls, runs=1, trace_path=None):
    """Per step: as many forwards as planned, on the planned expert, frame count, timestep and
    branches (only the conditional one where guidance is 1)."""
    per_step: dict[int, list] = {}
    for c in calls:
        per_step.setdefault(c.step, []).append(c)
    assert sorted(per_step) == [p.index for p in plan.steps]
    for p in plan.steps:
        got = per_step[p.index]
        assert len(got) == p.forwards * runs, (p, got)
        assert {c.expert for c in got} == {p.expert}, p
        assert {c.frames for c in got} == {p.frames}, p
        assert all(min(p.t, p.t_next) <= c.t <= max(p.t, p.t_next) for c in got), p
        if plan.solver != "fireflow" or p.restart:
            assert got[0].t == p.t, p  # the step's first evaluation is at its own level
        branches = {c.branch for c in got}
        assert branches == ({"cond"} if not p.cfg else {"batched"} if plan.branches_batched else {"cond", "uncond"}), p
    if trace_path is not None:
        rec = [r for r in trace.read(trace_path) if r["event"] == "model_call"]
        assert [(r["step"], r["t"], r["expert"], r["frames"], r["branch"]) for r in rec] == \
               [(c.step, c.t, c.expert, c.frames, c.branch) for c in calls]


def _embeds(bundle, b=1):
    emb = encode_prompts(bundle, [PROMPT, NEG])
    return emb[PROMPT].repeat(b, 1, 1), emb[NEG].repeat(b, 1, 1)


T2V_MATRIX = [
    # family, solver, steps, half-frame, until, cfg truncation (all, high), boundary, step cache, batched branches
    ("tiny-t2v-a14b", "unipc", 6, False, None, (0, 0), None, "none", False),
    ("tiny-t2v-a14b", "euler", 6, True, None, (1, 0), None, "first-block", False),
    ("tiny-t2v-a14b", "midpoint", 5, True, 0.8, (0, 1), None, "taylorseer", False),
    ("tiny-t2v-a14b", "fireflow", 6, True, 0.8, (2, 1), 0.7, "magcache", True),
    ("tiny-t2v-a14b", "unipc", 8, False, None, (0, 2), 0.7, "magcache", False),
    ("tiny-t2v-a14b", "unipc", 8, True, 0.7, (1, 1), 0.95, "none", True),
    ("tiny-ti2v-5b", "unipc", 6, True, 0.9, (1, 0), None, "first-block", False),
    ("tiny-ti2v-5b", "euler", 5, False, None, (2, 0), None, "taylorseer", True),
    ("tiny-ti2v-5b", "midpoint", 4, True, 0.7, (0, 0), None, "magcache", False),
    ("tiny-ti2v-5b", "fireflow", 6, False, None, (0, 0), None, "none", False),
]


@pytest.mark.parametrize("name,solver,steps,half,until,trunc,boundary,cache,batched", T2V_MATRIX)
def test_t2v_calls_equal_the_plan(bundles, tmp_path, monkeypatch, name, solver, steps, half, until, trunc, boundary,
                                  cache, batched):
    monkeypatch.setenv("WANCTL_CACHE_DIR", str(tmp_path))  # a fresh MagCache calibration store
    monkeypatch.setenv("WANCTL_TRACE", str(tmp_path / "trace.jsonl"))
    b = bundles(name)
    plan = plan_run(b.spec, "t2v", schedule=make_schedule(steps, b.family.preset.shift), solver=solver, frames=17,
                    width=W, height=H, guidance=Guidance(4.0, 3.0), negative_prompt=NEG, boundary=boundary,
                    half_frame=half, half_frame_until=until, cfg_truncate_steps=trunc[0],
                    cfg_truncate_high_noise_steps=trunc[1], branches_batched=batched)
    emb, neg = _embeds(b)
    runs = 2 if cache == "magcache" else 1  # calibrate, then run cached
    for _ in range(runs):
        with acc.accelerated(b, cache=cache, threshold=0.5 if cache != "taylorseer" else None) as caches:
            res = run_t2v(b, plan, embeds=emb, negative=neg, seed=1, caches=caches)
    assert_calls_follow_plan(plan, res.calls, trace_path=tmp_path / "trace.jsonl" if runs == 1 else None)
    calls = [r for r in trace.read(tmp_path / "trace.jsonl") if r["event"] == "model_call"]
    assert len(calls) == runs * plan.forwards
    if cache == "magcache":
        assert caches.settings["cache"] == "magcache"  # calibrated by the first run, used by the second
    assert res.latents.shape[2] == plan.latent_frames


@pytest.mark.parametrize("name,solver,batch,targets,batched", [
    ("tiny-ti2v-5b", "unipc", 1, 3, False),
    ("tiny-ti2v-5b", "fireflow", 2, 3, True),
    ("tiny-i2v-a14b", "midpoint", 2, 2, False),
    ("tiny-i2v-a14b", "euler", 1, 2, True),
])
def test_denoise_calls_equal_the_plan(bundles, tmp_path, monkeypatch, name, solver, batch, targets, batched):
    monkeypatch.setenv("WANCTL_TRACE", str(tmp_path / "trace.jsonl"))
    b = bundles(name)
    results = _denoise(b, solver=solver, batch=batch, n=targets, batched=batched)
    plan = results["plan"]
    calls = [r for r in trace.read(tmp_path / "trace.jsonl") if r["event"] == "model_call"]
    batches = -(-targets // batch)
    assert len(calls) == batches * plan.forwards
    assert sorted({r["batch"] for r in calls}) == sorted({min(batch, targets - i) * (2 if batched else 1)
                                                           for i in range(0, targets, batch)})


@pytest.mark.parametrize("solver,bidirectional,mode,batched", [
    ("unipc", False, "reencode", False),
    ("euler", True, "reencode", False),
    ("midpoint", True, "reencode", True),
    ("euler", True, "mirror", True),
])
def test_flf2v_calls_equal_the_plan(bundles, tmp_path, monkeypatch, solver, bidirectional, mode, batched):
    from wanctl.core.sampling.velocity import seeded_noise
    from wanctl.toy.shapes import example_clip, render

    monkeypatch.setenv("WANCTL_TRACE", str(tmp_path / "trace.jsonl"))
    b = bundles("tiny-i2v-a14b")
    clip = render(example_clip(W, H, 9))
    plan = plan_run(b.spec, "flf2v", schedule=make_schedule(4, 16.0), solver=solver, frames=9, width=W, height=H,
                    guidance=Guidance(5.0, 4.0), negative_prompt=NEG, bidirectional=bidirectional,
                    branches_batched=batched)
    emb, neg = _embeds(b)
    res = run_flf2v(b, plan, first=clip[0], last=clip[-1], embeds=emb, negative=neg, mode=mode,
                    noise=seeded_noise((1, 16, 3, 8, 8), 5))
    per_step = {}
    for c in res.state.calls:
        per_step[c.step] = per_step.get(c.step, 0) + 1
    assert per_step == {p.index: p.forwards for p in plan.steps}
    assert len([r for r in trace.read(tmp_path / "trace.jsonl") if r["event"] == "model_call"]) == plan.forwards
    if bidirectional and batched:
        assert {c.batch for c in res.state.calls} == {4}  # forward + backward, cond + uncond


def test_invert_calls_equal_the_plan(bundles, tmp_path, monkeypatch):
    from wanctl.core.io.artifact import Artifact, new_meta
    from wanctl.core.workflows.invert import run_inversion

    monkeypatch.setenv("WANCTL_TRACE", str(tmp_path / "trace.jsonl"))
    b = bundles("tiny-t2v-a14b")
    meta = new_meta("latent", family=b.family.name, command="encode", noise_level=0.0,
                    video={"width": W, "height": H, "frames": 9, "fps": 16})
    art = Artifact({"latents": torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))}, meta)
    for solver, refine in (("euler", 2), ("midpoint", 0), ("fireflow", 0)):
        plan = plan_run(b.spec, "invert", schedule=make_schedule(6, 12.0), solver=solver, refine=refine, frames=9,
                        width=W, height=H)
        def model_calls():
            return [r for r in trace.read(tmp_path / "trace.jsonl") if r["event"] == "model_call"]

        before = len(model_calls())
        res = run_inversion(b, art, plan, prompt=PROMPT)
        assert res.calls == plan.forwards == len(model_calls()) - before
        # an inversion step uses the expert of the denoising step over the same interval
        assert [p.expert for p in plan.steps][::-1] == \
               [p.expert for p in plan_run(b.spec, "denoise", schedule=make_schedule(6, 12.0), solver="euler",
                                           frames=9, width=W, height=H).steps]


# --------------------------------------------------------------------------- helpers


def _denoise(bundle, *, solver="euler", batch=1, n=3, batched=False, cache="none", steps=4, seed=3):
    """Denoise seeded noise for n identical text-only (ti2v) or first-frame (i2v) targets."""
    from wanctl.core.sampling.acceleration import SpeedOptions
    from wanctl.core.workflows.denoise import fresh_noise
    from wanctl.toy.shapes import example_clip, render

    fam = bundle.family
    sched = make_schedule(steps, fam.preset.shift)
    src: NoiseSource = fresh_noise(bundle, seed=seed, frames=9, width=W, height=H, schedule=sched)
    img = render(example_clip(W, H, 9))[0] if fam.conditioning == "mask-concat" else None
    targets = [Target(row=i + 1, prompt=PROMPT, output=f"t{i}", first_frame=None,
                      image=np.array(img) if img is not None else None) for i in range(n)]
    plan = plan_run(bundle.spec, "denoise", schedule=sched, solver=solver, frames=9, width=W, height=H,
                    guidance=Guidance(4.0, 3.0), negative_prompt=NEG, batch=batch, branches_batched=batched)
    out = {"plan": plan}
    run_denoise(bundle, plan, src, targets, on_result=lambda t, a: out.__setitem__(t.row, a.latents),
                speed=SpeedOptions(cache, threshold=0.5 if cache != "taylorseer" else None))
    return out


# --------------------------------------------------------------------------- regressions


def test_half_frame_until_below_the_boundary_routes_by_the_plan(bundles):
    """t2v -m tiny-t2v-a14b --half-frame --half-frame-until 0.8 --steps 10: steps below the
    boundary but above 0.8 run the low-noise expert with its guidance, on half frames."""
    b = bundles("tiny-t2v-a14b")
    plan = plan_run(b.spec, "t2v", schedule=make_schedule(10, 12.0), solver="unipc", frames=17, width=W, height=H,
                    guidance=Guidance(4.0, 3.0), half_frame=True, half_frame_until=0.8)
    between = [p for p in plan.steps if 0.8 <= p.s < 0.875]
    assert between and all(p.expert == "transformer_2" and p.guidance == 3.0 and p.frames == 3 for p in between)
    emb, neg = _embeds(b)
    res = run_t2v(b, plan, embeds=emb, negative=neg, seed=0)
    assert_calls_follow_plan(plan, res.calls)


@pytest.mark.parametrize("cache", ["taylorseer", "first-block"])
def test_step_cache_state_does_not_carry_over_between_batches(bundles, cache):
    """denoise --manifest (3 identical targets) --batch-size 1 --step-cache taylorseer: every
    target is cached the same way, so all three outputs are identical."""
    out = _denoise(bundles("tiny-ti2v-5b"), cache=cache, n=3, steps=8)
    assert torch.equal(out[1], out[2]) and torch.equal(out[1], out[3])
    plain = _denoise(bundles("tiny-ti2v-5b"), cache="none", n=1, steps=8)
    assert not torch.equal(out[1], plain[1])  # the cache really acted


def test_magcache_calibrates_multi_target_denoise_and_other_boundaries(bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("WANCTL_CACHE_DIR", str(tmp_path))
    b = bundles("tiny-ti2v-5b")
    first = _denoise(b, cache="magcache", n=2, steps=8)
    assert acc.load_calibration(b, first["plan"]) is not None
    b = bundles("tiny-t2v-a14b")
    plan = plan_run(b.spec, "t2v", schedule=make_schedule(8, 12.0), solver="unipc", frames=9, width=W, height=H,
                    guidance=Guidance(4.0, 3.0), negative_prompt=NEG, boundary=0.7)
    emb, neg = _embeds(b)
    with acc.accelerated(b, cache="magcache") as caches:
        run_t2v(b, plan, embeds=emb, negative=neg, seed=0, caches=caches)
    assert caches.settings["cache"] == "magcache-calibration"
    ratios = acc.load_calibration(b, plan)
    assert ratios is not None and {e: len(r) for e, r in ratios.items()} == plan.evaluations_per_expert()
    with acc.accelerated(b, cache="magcache") as caches:
        run_t2v(b, plan, embeds=emb, negative=neg, seed=0, caches=caches)
    assert caches.settings["cache"] == "magcache"


def test_dense_half_frame_with_first_block_cache_runs(bundles):
    """t2v -m tiny-ti2v-5b --half-frame --half-frame-until 0.9 --step-cache first-block: the
    cache is installed afresh when the frame count changes (it crashed with a size mismatch)."""
    b = bundles("tiny-ti2v-5b")
    plan = plan_run(b.spec, "t2v", schedule=make_schedule(8, 5.0), solver="unipc", frames=17, width=W, height=H,
                    guidance=Guidance(5.0, 5.0), negative_prompt=NEG, half_frame=True, half_frame_until=0.9)
    emb, neg = _embeds(b)
    with acc.accelerated(b, cache="first-block", threshold=0.5) as caches:
        res = run_t2v(b, plan, embeds=emb, negative=neg, seed=0, caches=caches)
    assert res.latents.shape[2] == plan.latent_frames == 5
    assert_calls_follow_plan(plan, res.calls)


def test_a_run_that_goes_non_finite_stops_and_names_the_step(bundles):
    from wanctl.core.errors import BadInputError
    from wanctl.core.sampling.executor import execute
    from wanctl.core.sampling.velocity import RunState

    b = bundles("tiny-ti2v-5b")
    plan = plan_run(b.spec, "denoise", schedule=make_schedule(10, 5.0), solver="euler", frames=9, width=W, height=H)
    calls = []

    def field(x, s):  # finite for 5 steps, then an overflow
        calls.append(s)
        return x * (float("inf") if len(calls) == 6 else 0.1)

    with pytest.raises(BadInputError, match=r"NaN or infinite in steps 5-8 of 10"):
        execute(plan, field, torch.zeros(1, 48, 3, 4, 4), RunState(plan))
    assert len(calls) == 8  # stopped at the next check, not at the end


def test_writer_refuses_non_finite_tensors(tmp_path):
    from wanctl.core.errors import BadInputError
    from wanctl.core.io.artifact import Artifact, new_meta, write_artifact

    meta = new_meta("latent", family="ti2v-5b", command="test", noise_level=0.0,
                    video={"width": 64, "height": 64, "frames": 9, "fps": 24})
    bad = torch.zeros(1, 48, 3, 4, 4)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(BadInputError, match="NaN or infinite"):
        write_artifact(str(tmp_path / "o.safetensors"), Artifact({"latents": bad}, meta))
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_magcache_calibration_is_not_used(bundles, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("WANCTL_CACHE_DIR", str(tmp_path))
    b = bundles("tiny-ti2v-5b")
    plan = plan_run(b.spec, "t2v", schedule=make_schedule(6, 5.0), solver="euler", frames=9, width=W, height=H)
    emb, _ = _embeds(b)
    with acc.accelerated(b, cache="magcache") as caches:
        run_t2v(b, plan, embeds=emb, negative=None, seed=0, caches=caches)
    assert acc.load_calibration(b, plan) is not None
    (entry,) = (tmp_path / "magcache").glob("*.json")
    data = json.loads(entry.read_text())
    data["ratios"][2] = 0.0  # a changed ratio no longer matches its checksum
    entry.write_text(json.dumps(data))
    assert acc.load_calibration(b, plan) is None


def test_step_caches_do_not_move_experts_under_offload_model(bundles, monkeypatch):
    """Installing a step cache configures an expert without bringing it to the device, so an
    --offload model run moves each expert exactly as often with a cache as without."""
    from wanctl.core.models.bundle import LoadOptions, ModelBundle

    b = bundles("tiny-t2v-a14b")
    plan = plan_run(b.spec, "t2v", schedule=make_schedule(6, 12.0), solver="unipc", frames=9, width=W, height=H)
    emb, _ = _embeds(b)
    moves = {}
    for cache in ("none", "first-block"):
        fresh = ModelBundle(b.spec, LoadOptions(device="cpu", dtype="fp32", offload="model"))
        log = []
        orig = fresh._activate
        monkeypatch.setattr(fresh, "_activate", lambda c, log=log, orig=orig: (log.append(c), orig(c)))
        with acc.accelerated(fresh, cache=cache) as caches:
            run_t2v(fresh, plan, embeds=emb, negative=None, seed=0, caches=caches)
        moves[cache] = [c for i, c in enumerate(log) if i == 0 or log[i - 1] != c]
    assert moves["first-block"] == moves["none"] == ["transformer", "transformer_2"]
