"""--preset lightning: the exact distilled grid, Euler, no CFG; options given still win, and
options that would replace its grid are refused."""

from __future__ import annotations

import pytest

from wanctl.core.errors import BadInputError
from wanctl.core.sampling.recipes import SamplingOptions, apply_recipe

LIGHTNING = (1.0, 0.9375, 5 / 6, 0.625, 0.0)


def test_lightning_fills_in_grid_solver_and_guidance():
    so = apply_recipe("lightning", SamplingOptions())
    assert so.sigmas == LIGHTNING and so.solver == "euler" and so.guidance == 1.0 and so.guidance_low is None
    assert so.steps is None and so.shift is None and so.grid is None


def test_given_options_override_the_recipe():
    so = apply_recipe("lightning", SamplingOptions(sigmas=(1.0, 0.5, 0.0), solver="midpoint", guidance=2.0))
    assert so.sigmas == (1.0, 0.5, 0.0) and so.solver == "midpoint"
    assert so.guidance == 2.0 and so.guidance_low is None  # the low expert follows --guidance, as without a preset


@pytest.mark.parametrize("given", [SamplingOptions(steps=4), SamplingOptions(shift=5.0), SamplingOptions(grid="dpm")])
def test_options_that_would_replace_the_grid_are_refused(given):
    with pytest.raises(BadInputError, match="own exact grid"):
        apply_recipe("lightning", given)


def test_unknown_recipe():
    with pytest.raises(BadInputError, match="use one of lightning"):
        apply_recipe("turbo", SamplingOptions())
    assert apply_recipe(None, SamplingOptions(steps=3)) == SamplingOptions(steps=3)


@pytest.mark.parametrize("model", ["tiny-t2v-a14b", "tiny-i2v-a14b"])
def test_lightning_plan_is_two_high_two_low_steps_without_cfg(bundles, model):
    from wanctl.core.sampling.plan import plan_run, resolve_guidance
    from wanctl.core.sampling.schedule import custom_schedule

    b = bundles(model)
    so = apply_recipe("lightning", SamplingOptions())
    def plan(**kw):
        return plan_run(b.spec, "denoise" if "i2v" in model else "t2v", schedule=custom_schedule(so.sigmas),
                        solver=so.solver, frames=5, width=64, height=64,
                        guidance=resolve_guidance(b.family, b.preset, so.guidance, so.guidance_low), **kw)

    with pytest.raises(BadInputError, match="uses no CFG"):  # a negative prompt would do nothing
        plan(negative_prompt="ugly")
    plan = plan()
    assert [round(st.s, 6) for st in plan.steps] == [1.0, 0.9375, round(5 / 6, 6), 0.625]
    assert [st.expert for st in plan.steps] == ["transformer", "transformer", "transformer_2", "transformer_2"]
    assert all(st.guidance == 1.0 and st.evaluations == 1 for st in plan.steps)
    assert plan.negative_prompt is None  # no unconditional branch, so no negative prompt is encoded
