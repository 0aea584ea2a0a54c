"""flf2v: equivalence with diffusers, the mirror construction, the re-encoded backward pass."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from wanctl.core.errors import BadInputError
from wanctl.core.models.text import encode_prompts
from wanctl.core.sampling.plan import Guidance, plan_run
from wanctl.core.sampling.schedule import make_schedule
from wanctl.core.sampling.velocity import seeded_noise
from wanctl.core.workflows.flf2v import conditions, fusion_weights, run_flf2v
from wanctl.toy.shapes import example_clip, render

W, H, F, STEPS = 64, 64, 9, 6
PROMPT, NEG = "the red circle moves right", "static"


@pytest.fixture(scope="module")
def frames():
    clip = render(example_clip(W, H, 9))
    return clip[0], clip[-1]


def _run(bundle, frames, solver, bidirectional=False, batched=False, shift=16.0, g=Guidance(5.0, 4.0), **kw):
    """(latents, DiT calls, plan) of an flf2v run on the diffusers grid."""
    plan = plan_run(bundle.spec, "flf2v", schedule=make_schedule(STEPS, shift, "diffusers"), solver=solver, frames=F,
                    width=W, height=H, guidance=g, negative_prompt=NEG, bidirectional=bidirectional,
                    branches_batched=batched)
    emb = encode_prompts(bundle, [PROMPT, NEG])
    res = run_flf2v(bundle, plan, first=frames[0], last=frames[1], embeds=emb[PROMPT], negative=emb[NEG],
                    noise=seeded_noise((1, 16, 3, 8, 8), 5), **kw)
    return res.latents, res.state.calls, plan


def test_forward_equals_diffusers_last_image(bundles, frames):
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    b = bundles("tiny-i2v-a14b")
    pipe = WanImageToVideoPipeline.from_pretrained(str(b.spec.path), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=16.0)
    ref = pipe(image=Image.fromarray(frames[0]), last_image=Image.fromarray(frames[1]), prompt=PROMPT, negative_prompt=NEG,
               height=H, width=W, num_frames=F, num_inference_steps=STEPS, guidance_scale=5.0, guidance_scale_2=4.0,
               generator=torch.Generator().manual_seed(5), output_type="latent").frames
    ours, calls, plan = _run(b, frames, "unipc")
    diff = (ours - ref).abs().max().item()
    print(f"flf2v forward-only vs diffusers last_image: {diff:.2e}")
    assert diff <= 1e-5
    assert len(calls) == plan.forwards == STEPS * 2  # CFG: two forwards per step


def test_mirror_equals_forward_and_reencode_does_not(bundles, frames):
    b = bundles("tiny-i2v-a14b")
    forward, _, _ = _run(b, frames, "euler")
    mirror, _, _ = _run(b, frames, "euler", bidirectional=True, mode="mirror")
    ours, _, _ = _run(b, frames, "euler", bidirectional=True)
    ours_rope, _, _ = _run(b, frames, "euler", bidirectional=True, reverse_rope=True, fusion="linear")
    d_mirror = (mirror - forward).abs().max().item()
    d_ours = (ours - forward).abs().max().item()
    rel = ((ours - forward).norm() / forward.norm()).item()
    print(f"mirror vs forward-only euler: {d_mirror:.1e}; wanctl bidirectional vs forward-only: max {d_ours:.3f}, relative {rel:.3f}")
    assert d_mirror <= 1e-5
    assert rel > 0.02
    assert (ours_rope - ours).abs().max() > 1e-3


def test_backward_condition_has_full_first_mask(bundles, frames):
    b = bundles("tiny-i2v-a14b")
    fwd, bwd = conditions(b, frames[0], frames[1], F, W, H, "reencode")
    mask_b, mask_f = bwd.concat[:, :4], fwd.concat[:, :4]
    assert torch.equal(mask_b[0, :, 0], torch.ones(4, 8, 8))  # the last image sits in the single-frame slot
    assert torch.equal(mask_b[0, :, -1, 0, 0], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert torch.equal(mask_b, mask_f)  # both pass types see "given first, given last"
    # the backward latent condition encodes the last frame at slot 0: it is not the flipped forward one
    assert not torch.allclose(bwd.concat[:, 4:], torch.flip(fwd.concat[:, 4:], dims=[2]), atol=1e-3)
    _, mirror_bwd = conditions(b, frames[0], frames[1], F, W, H, "mirror")
    assert torch.equal(mirror_bwd.concat, torch.flip(fwd.concat, dims=[2]))


def test_batched_passes_equal_separate_and_call_counts(bundles, frames):
    b = bundles("tiny-i2v-a14b")
    for solver, evals in (("euler", 1), ("midpoint", 2)):
        batched, c1, p1 = _run(b, frames, solver, bidirectional=True, batched=True)
        separate, c2, p2 = _run(b, frames, solver, bidirectional=True)
        assert (batched - separate).abs().max() <= 1e-5
        assert len(c1) == p1.forwards == STEPS * evals
        assert {c.batch for c in c1} == {4}  # forward + backward, conditional + unconditional
        assert len(c2) == p2.forwards == STEPS * evals * 4


def test_fusion_weights_and_errors(bundles, frames):
    assert fusion_weights(3, "uniform").flatten().tolist() == [0.5, 0.5, 0.5]
    assert fusion_weights(3, "linear").flatten().tolist() == [1.0, 0.5, 0.0]
    b = bundles("tiny-i2v-a14b")
    with pytest.raises(BadInputError, match="stateless solver"):
        _run(b, frames, "unipc", bidirectional=True)
    with pytest.raises(BadInputError, match="i2v-a14b"):
        emb = encode_prompts(b, [PROMPT])
        ti2v = bundles("tiny-ti2v-5b")
        plan = plan_run(ti2v.spec, "flf2v", schedule=make_schedule(2, 5.0), solver="euler", frames=F, width=W, height=H)
        run_flf2v(ti2v, plan, first=frames[0], last=frames[1], embeds=emb[PROMPT], negative=None,
                  noise=seeded_noise((1, 48, 3, 4, 4), 5))


def test_fusion_only_above_a_level_uses_the_forward_velocity_below_it():
    """The quality benchmark's experiment (fuse_above): below the level the forward pass alone, and
    with two separate passes the backward one is not even called there."""
    from wanctl.core.workflows.flf2v import BidirectionalVelocity

    calls = []

    def fwd(x, s):
        calls.append(("f", s))
        return x + 1.0

    def bwd(x, s):
        calls.append(("b", s))
        return 2.0 * x

    x = torch.arange(6.0).view(1, 1, 3, 1, 2)
    v = BidirectionalVelocity((fwd, bwd), fusion_weights(3, "uniform"), fuse_above=0.5)
    assert torch.equal(v(x, 0.4), x + 1.0) and calls == [("f", 0.4)]
    fused = v(x, 0.9)
    assert torch.equal(fused, 0.5 * (x + 1.0) + 0.5 * torch.flip(2.0 * torch.flip(x, dims=[2]), dims=[2]))
    assert calls[1:] == [("f", 0.9), ("b", 0.9)]

    def both(xx, s):  # the batched form: [x, flip(x)] in one call
        return torch.cat([fwd(xx[:1], s), bwd(xx[1:], s)])

    batched = BidirectionalVelocity((both,), fusion_weights(3, "uniform"), fuse_above=0.5)
    assert torch.equal(batched(x, 0.4), x + 1.0) and torch.equal(batched(x, 0.9), fused)
