"""wanctl's own sampling loops against diffusers' stock Wan pipelines on the tiny models
(fp32, CPU, same seed): the plain paths must agree to 1e-5 on the final latents."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from wanctl.core.models.text import encode_prompts
from wanctl.core.sampling.conditioning import build_condition
from wanctl.core.sampling.executor import sample
from wanctl.core.sampling.plan import Guidance, plan_run
from wanctl.core.sampling.schedule import make_schedule
from wanctl.core.sampling.velocity import seeded_noise
from wanctl.toy.shapes import example_clip, render_frame

W, H, F, STEPS, SEED = 64, 64, 9, 6, 7
PROMPT, NEGATIVE = "a red circle moving right", "blurry, static"


def _pipe(cls, bundle):
    from diffusers import UniPCMultistepScheduler

    pipe = cls.from_pretrained(str(bundle.spec.path), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    # the official shift, not the one the diffusers conversion ships in scheduler_config.json
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=bundle.family.preset.shift)
    return pipe


def _ours(bundle, guidance, first=None, last=None):
    fam = bundle.family
    emb = encode_prompts(bundle, [PROMPT, NEGATIVE])
    cond = build_condition(bundle, frames=F, width=W, height=H, first=first, last=last)
    plan = plan_run(bundle.spec, "denoise", schedule=make_schedule(STEPS, fam.preset.shift, "diffusers"), solver="unipc",
                    frames=F, width=W, height=H, guidance=guidance, negative_prompt=NEGATIVE)
    shape = (1, fam.latent_channels, fam.latent_frames(F), H // fam.stride[1], W // fam.stride[2])
    out, state = sample(bundle, plan, seeded_noise(shape, SEED), cond, emb[PROMPT], emb[NEGATIVE])
    return out, state


@pytest.mark.parametrize("name,g_high,g_low", [("tiny-ti2v-5b", 5.0, None), ("tiny-i2v-a14b", 4.0, 2.5)])
def test_first_frame_denoise_equals_wan_i2v_pipeline(bundles, name, g_high, g_low):
    from diffusers import WanImageToVideoPipeline

    bundle = bundles(name)
    img = render_frame(example_clip(W, H, 1), 0)
    pipe = _pipe(WanImageToVideoPipeline, bundle)
    kw = {"guidance_scale_2": g_low} if g_low is not None else {}
    ref = pipe(
        image=Image.fromarray(img), prompt=PROMPT, negative_prompt=NEGATIVE, height=H, width=W, num_frames=F,
        num_inference_steps=STEPS, guidance_scale=g_high, generator=torch.Generator().manual_seed(SEED),
        output_type="latent", **kw,
    ).frames
    ours, model = _ours(bundle, Guidance(g_high, g_low if g_low is not None else g_high), first=img)
    diff = (ours - ref).abs().max().item()
    print(f"{name}: max |wanctl - diffusers| = {diff:.2e} (latent max {ref.abs().max():.2f})")
    assert diff <= 1e-5
    experts = [c.expert for c in model.calls]
    if bundle.family.experts == 2:  # per-expert guidance was really exercised on both experts
        assert "transformer" in experts and "transformer_2" in experts
