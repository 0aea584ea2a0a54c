"""invert -> denoise round trips on the tiny models, and inversion options."""

from __future__ import annotations

import pytest
import torch

from wanctl.core.workflows.encode import encode, plan_encode
from wanctl.core.models.text import encode_prompts
from wanctl.core.sampling.executor import sample
from wanctl.core.sampling.plan import plan_run
from wanctl.core.sampling.schedule import make_schedule
from wanctl.core.workflows.invert import run_inversion, source_condition

PROMPT = "a red circle moving right"


@pytest.fixture(scope="module")
def latents(bundles, assets):
    out = {}
    for name in ("tiny-ti2v-5b", "tiny-i2v-a14b", "tiny-t2v-a14b"):
        b = bundles(name)
        art, _ = encode(b, plan_encode(str(assets["clip"]), b.family, frames=9, size=(64, 64)))
        art.path = "clip.safetensors"
        out[name] = art
    return out


def invert(bundle, art, schedule, solver="euler", refine=0, **kw):
    plan = plan_run(bundle.spec, "invert", schedule=schedule, solver=solver, refine=refine, frames=9, width=64, height=64,
                    batch=art.latents.shape[0])
    return run_inversion(bundle, art, plan, prompt=PROMPT, **kw)


def round_trip(bundle, art, solver, steps, refine=0):
    """Relative error of invert-then-denoise (same prompt, no CFG, same condition and grid),
    measured on the frames that are not pinned by the condition."""
    # the diffusers grid, on which the solver orders below were measured (the official grid's
    # coarse low-noise end gives midpoint a better 10-step error and a smaller ratio over 10-40 steps)
    sched = make_schedule(steps, bundle.family.preset.shift, "diffusers")
    noise = invert(bundle, art, sched, solver, refine).noise
    cond = source_condition(bundle, art, True)
    plan = plan_run(bundle.spec, "denoise", schedule=sched, solver="euler" if refine else solver, frames=9, width=64,
                    height=64)
    rec, _ = sample(bundle, plan, noise.latents, cond, encode_prompts(bundle, [PROMPT])[PROMPT])
    first = 1 if cond.kind == "pinned" else 0
    x0 = art.latents
    return ((rec - x0)[:, :, first:].norm() / x0[:, :, first:].norm()).item()


@pytest.mark.parametrize("name", ["tiny-ti2v-5b", "tiny-i2v-a14b"])
def test_round_trip_errors(bundles, latents, name):
    b, art = bundles(name), latents[name]
    e10, e20 = round_trip(b, art, "euler", 10), round_trip(b, art, "euler", 20)
    m10, m20, m40 = (round_trip(b, art, "midpoint", n) for n in (10, 20, 40))
    r30 = round_trip(b, art, "euler", 30, refine=5)
    print(f"\n{name} relative round-trip error: euler 10 steps {e10:.2e}, 20 steps {e20:.2e}; "
          f"midpoint 10/20/40 steps {m10:.2e}/{m20:.2e}/{m40:.2e} (x{m10 / m20:.1f}, x{m20 / m40:.1f} per doubling); "
          f"euler --refine 5, 30 steps {r30:.2e}")
    assert e20 < 0.6 * e10  # first order: about halves
    if b.family.experts == 1:
        assert m10 / m40 > 8  # second order: about 4x per doubling (16x over two)
    # On A14B the expert switch makes v jump at t = boundary * 1000: one-step methods lose an
    # order on the step that straddles it, so midpoint falls ~2-2.5x per doubling there.
    assert m20 < e20 / 5
    assert r30 <= 1e-4


def test_refine_converges_with_iterations(bundles, latents):
    b, art = bundles("tiny-ti2v-5b"), latents["tiny-ti2v-5b"]
    errs = [round_trip(b, art, "euler", 10, refine=k) for k in (1, 5, 20)]
    print("\nrefine 1/5/20 at 10 steps:", ["%.1e" % e for e in errs])
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-5


def test_inversion_artifact(bundles, latents):
    b, art = bundles("tiny-i2v-a14b"), latents["tiny-i2v-a14b"]
    sched = make_schedule(6, 5.0)
    res = invert(b, art, sched, "fireflow", save_trajectory=True)
    again = invert(b, art, sched, "fireflow")
    assert torch.equal(res.noise.latents, again.noise.latents)  # deterministic, no seed
    m = res.noise.meta
    assert m["kind"] == "noise" and m["noise_level"] == sched.s_max
    p = m["params"]
    assert p["solver"] == "fireflow" and p["prompt"] == PROMPT and p["conditional"] is True
    assert p["schedule"]["sigmas"] == list(sched.sigmas) and p["conditioning"] == "concat"
    assert set(m["model"]["components"]) == {"transformer", "transformer_2", "text_encoder", "tokenizer", "vae"}
    assert m["provenance"]["inputs"][0]["role"] == "latent"
    assert res.calls == 7  # fireflow: steps + 1
    traj = res.trajectory.tensors
    assert len([k for k in traj if k.startswith("trajectory/")]) == 7
    assert torch.equal(traj["trajectory/0"], art.latents) and torch.equal(traj["trajectory/6"], res.noise.latents)


def test_strength_and_unconditional(bundles, latents):
    b, art = bundles("tiny-ti2v-5b"), latents["tiny-ti2v-5b"]
    part = invert(b, art, make_schedule(10, 5.0, strength=0.5))
    assert part.noise.meta["noise_level"] <= 0.5 and part.calls < 10
    cond = invert(b, art, make_schedule(4, 5.0))
    unc = invert(b, art, make_schedule(4, 5.0), conditional=False)
    # conditional: frame 0 stays the clean source latent; unconditional inverts it too
    assert torch.equal(cond.noise.latents[:, :, 0], art.latents[:, :, 0])
    assert not torch.allclose(unc.noise.latents[:, :, 0], art.latents[:, :, 0])
    assert unc.noise.meta["params"]["conditional"] is False


def test_t2v_inversion_is_text_only(bundles, latents):
    b, art = bundles("tiny-t2v-a14b"), latents["tiny-t2v-a14b"]
    res = invert(b, art, make_schedule(40, 12.0))
    assert res.noise.meta["params"]["conditioning"] == "text"
    assert res.noise.meta["params"]["conditional"] is False
    err = round_trip(b, art, "euler", 30, refine=5)
    print(f"\nt2v-a14b euler --refine 5 at 30 steps: {err:.1e}")
    assert err < 1e-2
