"""Solvers against a velocity field whose exact flow is known: Gaussian data.

For x0 ~ N(mu, sd^2) and eps ~ N(0, 1), x_s = (1-s) x0 + s eps is Gaussian with mean (1-s) mu
and variance var(s) = (1-s)^2 sd^2 + s^2; the probability-flow ODE keeps the standardized value
z = (x - (1-s) mu) / sqrt(var(s)) constant, so the exact solution is closed form.
"""

from __future__ import annotations

import math

import pytest
import torch

from wanctl.core.sampling.plan import route_expert
from wanctl.core.sampling.schedule import make_schedule, model_timestep
from wanctl.core.sampling.plan import evaluations_per_step
from wanctl.core.sampling.solvers import SOLVERS, euler_refined

MU, SD = 0.7, 0.4


def var(s):
    return (1 - s) ** 2 * SD**2 + s**2


def velocity(x, s):
    r = x - (1 - s) * MU
    return s / var(s) * r - (MU + (1 - s) * SD**2 / var(s) * r)


def exact(x, sa, sb):
    z = (x - (1 - sa) * MU) / math.sqrt(var(sa))
    return (1 - sb) * MU + math.sqrt(var(sb)) * z


X = torch.linspace(-2, 2, 12, dtype=torch.float64).view(1, 3, 4)


def errors(name, ns):
    out = []
    for n in ns:
        sig = [0.9 * (1 - i / n) for i in range(n + 1)]  # uniform grid, away from the s = 1 end
        got = SOLVERS[name](velocity, X.clone(), sig)
        out.append((got - exact(X, sig[0], 0.0)).abs().max().item())
    return out


@pytest.mark.parametrize("name,order", [("euler", 1), ("midpoint", 2), ("fireflow", 2), ("unipc", 2)])
def test_convergence_order(name, order):
    errs = errors(name, [32, 64, 128, 256])
    ratios = [a / b for a, b in zip(errs, errs[1:])]
    print(name, ["%.2e" % e for e in errs], ["%.2f" % r for r in ratios])
    # halving h divides the error by ~2^order
    assert min(ratios[1:]) > 2 ** order * 0.85, ratios
    assert errs[-1] < 1e-2


def test_inversion_round_trip_analytic():
    sig = make_schedule(20, 3.0).sigmas
    noise = SOLVERS["euler"](velocity, X.clone(), list(reversed(sig)))
    plain = (SOLVERS["euler"](velocity, noise, sig) - X).abs().max().item()
    refined_noise = euler_refined(velocity, X.clone(), list(reversed(sig)), 8)
    refined = (SOLVERS["euler"](velocity, refined_noise, sig) - X).abs().max().item()
    print(f"euler round trip {plain:.2e}, with 8 fixed-point iterations {refined:.2e}")
    assert refined < 1e-6 < plain


def test_unipc_matches_diffusers_scheduler():
    from diffusers import UniPCMultistepScheduler

    from wanctl.core.models.builtin import scheduler_config

    x0 = torch.linspace(-2, 2, 12).view(1, 3, 4)
    for n in (3, 8, 20):
        sch = UniPCMultistepScheduler.from_config(scheduler_config(5.0))
        sch.set_timesteps(n)
        x = x0.clone()
        for i, t in enumerate(sch.timesteps):
            x = sch.step(velocity(x, sch.sigmas[i].item()), t, x).prev_sample
        ours = SOLVERS["unipc"](velocity, x0.clone(), make_schedule(n, 5.0, "diffusers").sigmas)
        assert torch.allclose(ours, x, atol=2e-6), (n, (ours - x).abs().max())


def test_schedule_matches_diffusers_grid():
    from diffusers import UniPCMultistepScheduler

    from wanctl.core.models.builtin import scheduler_config

    sch = UniPCMultistepScheduler.from_config(scheduler_config(12.0))
    sch.set_timesteps(40)
    ours = make_schedule(40, 12.0, "diffusers")
    assert ours.timesteps() == sch.timesteps.tolist()
    assert torch.allclose(torch.tensor(ours.sigmas, dtype=torch.float32), sch.sigmas)
    dpm = make_schedule(10, 5.0, grid="dpm")
    assert dpm.sigmas[0] == 1.0 and dpm.sigmas[-1] == 0.0 and len(dpm.sigmas) == 11


def test_expert_routing_counts():
    """SPEC: 40 steps, shift 12, boundary 0.875 -> 26 high-noise steps; i2v shift 5, 0.9 -> 15."""
    t2v = make_schedule(40, 12.0)
    assert sum(route_expert(t, 0.875) == "transformer" for t in t2v.timesteps()) == 26
    i2v = make_schedule(40, 5.0)
    assert sum(route_expert(t, 0.9) == "transformer" for t in i2v.timesteps()) == 15
    assert route_expert(model_timestep(0.5), None) == "transformer"


def test_strength_truncates_grid():
    full = make_schedule(20, 5.0)
    part = make_schedule(20, 5.0, strength=0.6)
    assert part.sigmas == full.sigmas[-len(part.sigmas):]
    assert part.s_max <= 0.6 < full.sigmas[len(full.sigmas) - len(part.sigmas) - 1]


def test_model_call_counts():
    calls = []

    def counting(x, s):
        calls.append(s)
        return velocity(x, s)

    sig = make_schedule(7, 5.0).sigmas
    for name in SOLVERS:
        calls.clear()
        SOLVERS[name](counting, X.clone(), sig)
        assert len(calls) == sum(evaluations_per_step(name, 0, i == 0) for i in range(7)), name
    calls.clear()
    euler_refined(counting, X.clone(), list(reversed(sig)), 3)
    assert len(calls) == 7 * evaluations_per_step("euler", 3, False) == 28
