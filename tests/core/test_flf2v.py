"""flf2v: equivalence with diffusers, the mirror construction, the re-encoded backward pass."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from wanctl.core.errors import BadInputError
from wanctl.core.workflows.flf2v import conditions, forwards_per_step, fusion_weights, run_flf2v
from wanctl.core.sampling.velocity import Guidance, seeded_noise
from wanctl.core.sampling.schedule import make_schedule
from wanctl.core.models.text import encode_prompts
from wanctl.toy.shapes import example_clip, render

W, H, F, STEPS = 64, 64, 9, 6
PROMPT, NEG = "the red circle moves right", "static"


@pytest.fixture(scope="module")
def frames():
    clip = render(example_clip(W, H, 9))
    return clip[0], clip[-1]


def _kw(bundle, frames, shift=16.0, g=Guidance(5.0, 4.0)):
    emb = encode_prompts(bundle, [PROMPT, NEG])
    return dict(first=frames[0], last=frames[1], frames=F, width=W, height=H, embeds=emb[PROMPT], negative=emb[NEG],
                guidance=g, schedule=make_schedule(STEPS, shift), noise=seeded_noise((1, 16, 3, 8, 8), 5))


def test_forward_equals_diffusers_last_image(bundles, frames):
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    b = bundles("tiny-i2v-a14b")
    pipe = WanImageToVideoPipeline.from_pretrained(str(b.spec.path), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=16.0)
    ref = pipe(image=Image.fromarray(frames[0]), last_image=Image.fromarray(frames[1]), prompt=PROMPT, negative_prompt=NEG,
               height=H, width=W, num_frames=F, num_inference_steps=STEPS, guidance_scale=5.0, guidance_scale_2=4.0,
               generator=torch.Generator().manual_seed(5), output_type="latent").frames
    ours, calls = run_flf2v(b, solver="unipc", **_kw(b, frames))
    diff = (ours - ref).abs().max().item()
    print(f"flf2v forward-only vs diffusers last_image: {diff:.2e}")
    assert diff <= 1e-5
    assert len(calls) == STEPS * forwards_per_step("unipc", False, True, True)


def test_mirror_equals_forward_and_reencode_does_not(bundles, frames):
    b = bundles("tiny-i2v-a14b")
    kw = _kw(b, frames)
    forward, _ = run_flf2v(b, solver="euler", **kw)
    mirror, _ = run_flf2v(b, solver="euler", bidirectional=True, mode="mirror", **kw)
    ours, _ = run_flf2v(b, solver="euler", bidirectional=True, **kw)
    ours_rope, _ = run_flf2v(b, solver="euler", bidirectional=True, reverse_rope=True, fusion="linear", **kw)
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
    kw = _kw(b, frames)
    for solver in ("euler", "midpoint"):
        batched, c1 = run_flf2v(b, solver=solver, bidirectional=True, batch_passes=True, **kw)
        separate, c2 = run_flf2v(b, solver=solver, bidirectional=True, batch_passes=False, reverse_rope=False, **kw)
        assert (batched - separate).abs().max() <= 1e-5
        assert len(c1) == STEPS * forwards_per_step(solver, True, True, True)
        assert {c[1] for c in c1} == {4}  # forward + backward, conditional + unconditional
        assert len(c2) == STEPS * forwards_per_step(solver, True, True, False)


def test_fusion_weights_and_errors(bundles, frames):
    assert fusion_weights(3, "uniform").flatten().tolist() == [0.5, 0.5, 0.5]
    assert fusion_weights(3, "linear").flatten().tolist() == [1.0, 0.5, 0.0]
    b = bundles("tiny-i2v-a14b")
    with pytest.raises(BadInputError, match="stateless solver"):
        run_flf2v(b, solver="unipc", bidirectional=True, **_kw(b, frames))
    with pytest.raises(BadInputError, match="i2v-a14b"):
        run_flf2v(bundles("tiny-ti2v-5b"), **_kw(b, frames))
