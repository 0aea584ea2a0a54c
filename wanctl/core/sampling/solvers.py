"""Flow-matching ODE solvers, each one short function over a velocity callable and a sigma list.

``model(x, s) -> v`` returns the velocity at noise level ``s`` (v ~ eps - x0). ``sigmas`` is the
list of levels to visit, in the direction of travel: descending to denoise, ascending to invert.
The stateless solvers (euler, midpoint, fireflow) work in both directions; unipc only denoises.

``callback(i, x, v, s, s_next)`` is called after every step with the new state and the velocity
the step started from (so callers can form x0_hat / eps_hat of the last prediction).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

Model = Callable[["torch.Tensor", float], "torch.Tensor"]
Callback = Callable[[int, "torch.Tensor", "torch.Tensor", float, float], None] | None


def euler(model: Model, x, sigmas: Sequence[float], callback: Callback = None):
    """x <- x + (s_next - s) * v(x, s). One model call per step, first order."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        v = model(x, s)
        x = x + (s_next - s) * v
        if callback:
            callback(i, x, v, s, s_next)
    return x


def midpoint(model: Model, x, sigmas: Sequence[float], callback: Callback = None):
    """Explicit midpoint (RF-Solver is algebraically this). Two calls per step, second order."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        h = s_next - s
        v = model(x, s)
        v_mid = model(x + 0.5 * h * v, s + 0.5 * h)
        x = x + h * v_mid
        if callback:
            callback(i, x, v, s, s_next)
    return x


def fireflow(model: Model, x, sigmas: Sequence[float], callback: Callback = None):
    """FireFlow (arXiv 2412.07517): a midpoint step whose first velocity is the previous step's
    midpoint velocity. One call per step after the first, second order."""
    v_prev = None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        h = s_next - s
        v = model(x, s) if v_prev is None else v_prev
        v_mid = model(x + 0.5 * h * v, s + 0.5 * h)
        x = x + h * v_mid
        v_prev = v_mid
        if callback:
            callback(i, x, v, s, s_next)
    return x


def euler_refined(model: Model, x, sigmas: Sequence[float], iterations: int, callback: Callback = None):
    """Implicit Euler by fixed-point iteration: solve x_next = x + h * v(x_next, s_next).

    Used for inversion: an explicit Euler step from (x_next, s_next) back to s then undoes it
    exactly (to the fixed point's tolerance). 1 + iterations model calls per step.
    """
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        h = s_next - s
        v = model(x, s)
        x_next = x + h * v
        for _ in range(iterations):
            x_next = x + h * model(x_next, s_next)
        x = x_next
        if callback:
            callback(i, x, v, s, s_next)
    return x


# --------------------------------------------------------------------------- UniPC


def _lambda(s: float) -> float:
    """log-SNR of the flow path x_s = (1-s) x0 + s eps (alpha = 1-s, sigma = s)."""
    s = min(max(s, 0.0), 1.0 - 1e-6)  # s = 1 would make log(alpha) infinite
    return math.log(1.0 - s) - math.log(s) if s > 0 else math.inf


def unipc(model: Model, x, sigmas: Sequence[float], callback: Callback = None, order: int = 2,
          lower_order_final: bool = True):
    """UniPC (bh2, data prediction) for flow matching, as diffusers' UniPCMultistepScheduler with
    ``prediction_type="flow_prediction", use_flow_sigmas=True``: a multistep predictor (UniP) and,
    from the second step, a corrector (UniC) that reuses the model call of the next point.
    One model call per step. Denoising only (the formulas divide by s).
    """
    n = len(sigmas) - 1
    x0s: list = []  # data predictions m_i, newest last
    lam = [_lambda(s) for s in sigmas]
    x_prev = None  # state the previous predictor started from
    prev_order = 0
    for i in range(n):
        s = sigmas[i]
        v = model(x, s)
        m = x - s * v
        if i > 0:
            x = _unic(x_prev, x, m, x0s, lam, sigmas, i, prev_order)
        x0s.append(m)
        if len(x0s) > order:
            x0s.pop(0)
        p = min(order, n - i) if lower_order_final else order
        p = min(p, i + 1)
        x_prev = x
        x = _unip(x, x0s, lam, sigmas, i, p)
        prev_order = p
        if callback:
            callback(i, x, v, s, sigmas[i + 1])
    return x


def _coeffs(lam_t: float, lam_s0: float):
    h = lam_t - lam_s0
    hh = -h
    h_phi_1 = math.expm1(hh)  # e^{-h} - 1
    return h, hh, h_phi_1, h_phi_1  # B(h) = expm1(hh) for bh2


def _unip(x, x0s, lam, sigmas, i, p):
    """Predictor from s_i to s_{i+1} with order p."""
    s0, t = sigmas[i], sigmas[i + 1]
    m0 = x0s[-1]
    h, hh, h_phi_1, b_h = _coeffs(lam[i + 1], lam[i])
    alpha_t = 1.0 - t
    x_t = (t / s0) * x - alpha_t * h_phi_1 * m0
    if p >= 2:
        # order 2 uses rho = 0.5 (diffusers' simplification); only order <= 2 is supported
        rk = (lam[i - 1] - lam[i]) / h
        d1 = (x0s[-2] - m0) / rk
        x_t = x_t - alpha_t * b_h * 0.5 * d1
    return x_t


def _unic(x_prev, x_t, m_t, x0s, lam, sigmas, i, p):
    """Corrector of the state at s_i using the new data prediction m_t, order p."""
    s0, t = sigmas[i - 1], sigmas[i]
    m0 = x0s[-1]
    h, hh, h_phi_1, b_h = _coeffs(lam[i], lam[i - 1])
    alpha_t = 1.0 - t
    base = (t / s0) * x_prev - alpha_t * h_phi_1 * m0
    d1_t = m_t - m0
    if p == 1:
        return base - alpha_t * b_h * 0.5 * d1_t
    # order 2: solve the 2x2 system R rho = b for the corrector weights
    rk = (lam[i - 2] - lam[i - 1]) / h
    d1 = (x0s[-2] - m0) / rk
    h_phi_k = h_phi_1 / hh - 1.0
    b = [h_phi_k / b_h]
    h_phi_k = h_phi_k / hh - 1.0 / 2.0
    b.append(h_phi_k * 2.0 / b_h)
    # R = [[1, 1], [rk, 1]]
    det = 1.0 - rk
    rho0 = (b[0] - b[1]) / det
    rho1 = (b[1] - rk * b[0]) / det
    return base - alpha_t * b_h * (rho0 * d1 + rho1 * d1_t)


SOLVERS = {
    "euler": euler,
    "midpoint": midpoint,
    "fireflow": fireflow,
    "unipc": unipc,
}
INVERTIBLE = ("euler", "midpoint", "fireflow")
