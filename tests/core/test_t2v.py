"""t2v: equivalence with WanPipeline, half-frame generation, CFG truncation, the step plan."""

from __future__ import annotations

import pytest
import torch

from wanctl.core.errors import BadInputError
from wanctl.core.models.text import encode_prompts
from wanctl.core.sampling.plan import COMPLETIONS, Guidance, plan_run
from wanctl.core.sampling.schedule import make_schedule
from wanctl.core.workflows.t2v import complete_frames, run_t2v

W, H, SEED = 64, 64, 11
PROMPT, NEG = "a cat walking on the beach", "static, blurry"


def _run(bundle, steps=8, frames=9, guidance=Guidance(4.0, 3.0), keep=False, grid="diffusers", **kw):
    fam = bundle.family
    sched = make_schedule(steps, fam.preset.shift, grid)
    cfg = guidance.high != 1.0 or guidance.low != 1.0  # a negative prompt is refused where no step has CFG
    plan = plan_run(bundle.spec, "t2v", schedule=sched, frames=frames, width=W, height=H, guidance=guidance,
                    negative_prompt=NEG if cfg else None, **{"solver": "unipc", **kw})
    emb = encode_prompts(bundle, [PROMPT, NEG])
    switch = {}

    def at(event, step, x):  # the latent at the switch level: completed (half-frame) or reached (plain)
        if event == "restart" or (event == "step" and not plan.half_frame and step.index == plan.expert_switch - 1):
            switch["x"] = x.clone()

    res = run_t2v(bundle, plan, embeds=emb[PROMPT], negative=emb[NEG], seed=SEED, callback=at if keep else None)
    res.switch_state = switch.get("x")
    return plan, res


@pytest.mark.parametrize("name,g_high,g_low", [("tiny-t2v-a14b", 4.0, 3.0), ("tiny-ti2v-5b", 5.0, 5.0)])
def test_t2v_equals_wan_pipeline(bundles, name, g_high, g_low):
    from diffusers import UniPCMultistepScheduler, WanPipeline

    b = bundles(name)
    pipe = WanPipeline.from_pretrained(str(b.spec.path), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=b.family.preset.shift)
    # diffusers: guidance_scale is the high-noise expert's, guidance_scale_2 the low-noise one's
    kw = {"guidance_scale_2": g_low} if b.family.experts == 2 else {}
    ref = pipe(prompt=PROMPT, negative_prompt=NEG, height=H, width=W, num_frames=9, num_inference_steps=8,
               guidance_scale=g_high, generator=torch.Generator().manual_seed(SEED), output_type="latent", **kw).frames
    plan, res = _run(b, guidance=Guidance(g_high, g_low))
    diff = (res.latents - ref).abs().max().item()
    print(f"{name}: max |wanctl - diffusers| = {diff:.2e}")
    assert diff <= 1e-5
    if b.family.experts == 2:
        assert {c.expert for c in res.calls} == {"transformer", "transformer_2"}
        # swapping the two scales must change the result: the mapping is really per expert
        _, swapped = _run(b, guidance=Guidance(g_low, g_high))
        assert (swapped.latents - ref).abs().max() > 1e-3


def test_half_frame_calls_and_shapes(bundles):
    b = bundles("tiny-t2v-a14b")
    frames = 17  # T = 5 latent frames, half = 3
    plan, res = _run(b, steps=10, frames=frames, half_frame=True, completion="renoise")
    k = plan.switch
    assert k is not None and 0 < k < 10
    high = [c for c in res.calls if c.expert == "transformer"]
    low = [c for c in res.calls if c.expert == "transformer_2"]
    assert len(high) == 2 * k and len(low) == 2 * (10 - k)  # CFG: two forwards per step
    assert {c.frames for c in high} == {3} and {c.frames for c in low} == {5}
    assert res.latents.shape == (1, 16, 5, 8, 8)
    assert plan.half_frames == 3 and plan.relative_flops < 1


@pytest.mark.parametrize("mode", COMPLETIONS)
def test_completion_modes_shape_and_determinism(bundles, mode):
    b = bundles("tiny-t2v-a14b")
    _, a = _run(b, steps=6, frames=13, half_frame=True, completion=mode)
    _, c = _run(b, steps=6, frames=13, half_frame=True, completion=mode)
    assert a.latents.shape == (1, 16, 4, 8, 8)
    assert torch.equal(a.latents, c.latents)


def test_complete_frames_layout():
    x = torch.arange(3.0).view(1, 1, 3, 1, 1)  # half frames 0, 1, 2
    assert complete_frames(x, 5, "repeat").flatten().tolist() == [0, 0, 1, 1, 2]
    assert complete_frames(x, 6, "repeat").flatten().tolist() == [0, 0, 1, 1, 2, 2]
    assert complete_frames(x, 5, "interpolate").flatten().tolist() == [0, 0.5, 1, 1.5, 2]
    assert complete_frames(x, 6, "interpolate").flatten().tolist() == [0, 0.5, 1, 1.5, 2, 2]
    x = torch.randn(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1, 1)
    r = complete_frames(x, 5, "renoise", x0=torch.zeros_like(x), s=0.5, seed=0)
    assert torch.equal(r[:, :, 0::2], x)  # kept frames keep their state
    # inserted frames: pure (scaled) noise here, at the level of their neighbours
    ratio = r[:, :, 1].var(dim=(2, 3)) / (0.5 * (x[:, :, 0].var(dim=(2, 3)) + x[:, :, 1].var(dim=(2, 3))))
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.15)


def test_correlated_renoise_mixes_the_neighbours_implied_noise():
    """The quality benchmark's experiment: correlation 0 is the plain renoise; correlation 1
    replaces the fresh noise by the neighbours' implied noise (x - (1 - s) x0) / s, rescaled."""
    g = torch.Generator().manual_seed(1)
    x, x0 = torch.randn(1, 2, 3, 16, 16, generator=g), torch.randn(1, 2, 3, 16, 16, generator=g)
    plain = complete_frames(x, 5, "renoise", x0=x0, s=0.6, seed=3)
    assert torch.equal(complete_frames(x, 5, "renoise", x0=x0, s=0.6, seed=3, correlation=0.0), plain)
    full = complete_frames(x, 5, "renoise", x0=x0, s=0.6, seed=3, correlation=1.0)
    assert torch.equal(full[:, :, 0::2], x)
    implied = 0.5 * (x[:, :, 0] - 0.4 * x0[:, :, 0] + x[:, :, 1] - 0.4 * x0[:, :, 1]) / 0.6
    implied = implied / implied.std(dim=(2, 3), keepdim=True)
    signal = 0.4 * 0.5 * (x0[:, :, 0] + x0[:, :, 1])
    amp = (full[:, :, 1] - signal).std(dim=(2, 3), keepdim=True) / implied.std(dim=(2, 3), keepdim=True)
    assert torch.allclose(full[:, :, 1], signal + amp * implied, atol=1e-5)
    assert not torch.allclose(full[:, :, 1], plain[:, :, 1])


def test_renoise_keeps_noise_level(bundles):
    """Per-frame std at the switch: renoise within 10% of a plain run's; interpolate is not."""
    b = bundles("tiny-t2v-a14b")
    kw = dict(steps=10, frames=33, keep=True, solver="euler")
    _, plain = _run(b, **kw)
    ref = plain.switch_state.std(dim=(0, 1, 3, 4))
    ratios = {}
    for mode in ("renoise", "interpolate", "repeat"):
        _, r = _run(b, half_frame=True, completion=mode, **kw)
        ratios[mode] = (r.switch_state.std(dim=(0, 1, 3, 4)) / ref)
        print(mode, "per-frame std / plain:", [f"{v:.2f}" for v in ratios[mode].tolist()])
    assert ((ratios["renoise"] - 1).abs() < 0.10).all()
    assert ratios["interpolate"].min() < 0.85  # averaging two noises lowers the level


def test_cfg_truncation_call_counts(bundles):
    b = bundles("tiny-t2v-a14b")
    plan, res = _run(b, steps=10, cfg_truncate_steps=3, cfg_truncate_high_noise_steps=2)
    assert len(res.calls) == sum(p.forwards for p in plan.steps)
    k = plan.expert_switch
    off = [p.index for p in plan.steps if not p.cfg]
    assert off == [k - 2, k - 1, 7, 8, 9]
    assert len(res.calls) == 2 * 10 - 5
    plan, res = _run(b, steps=10, branches_batched=True)
    assert len(res.calls) == 10 and {c.batch for c in res.calls} == {2}  # one forward of batch 2


def test_cfg_batch_equals_two_forwards(bundles):
    b = bundles("tiny-t2v-a14b")
    _, two = _run(b, steps=5)
    _, one = _run(b, steps=5, branches_batched=True)
    assert (two.latents - one.latents).abs().max() < 1e-5


def test_dense_half_frame_needs_a_level(bundles):
    b = bundles("tiny-ti2v-5b")
    with pytest.raises(BadInputError, match="--half-frame-until"):
        _run(b, half_frame=True)
    plan, res = _run(b, steps=8, frames=9, half_frame=True, half_frame_until=0.9)
    assert plan.switch == next(i for i, s in enumerate(plan.schedule.sigmas) if s < 0.9)
    assert {c.frames for c in res.calls[: 2 * plan.switch]} == {2} and res.calls[-1].frames == 3


def test_fireflow_half_frame_plan_matches_calls(bundles):
    b = bundles("tiny-t2v-a14b")
    plan, res = _run(b, steps=8, frames=9, half_frame=True, solver="fireflow", guidance=Guidance(1.0, 1.0))
    assert len(res.calls) == sum(p.forwards for p in plan.steps) == 8 + 2  # restart at the switch
