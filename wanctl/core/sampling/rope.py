"""Per-sample reversal of the DiT's temporal RoPE positions.

diffusers' WanRotaryPosEmbed returns one (1, tokens, 1, head_dim) table for the whole batch.
``reversed_time_rope(dit, flags)`` temporarily swaps in a module that returns a
(batch, tokens, 1, head_dim) table whose rows flagged True use temporal positions T-1..0 instead
of 0..T-1 (height and width positions unchanged). The attention processors broadcast either
shape, so flagged and unflagged passes can share one batched forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence


def _make(orig, flags: Sequence[bool]):
    import torch

    class ReversedTimeRope(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.orig = orig

        def forward(self, hidden_states):
            cos, sin = self.orig(hidden_states)
            b, _, f, h, w = hidden_states.shape
            pt, ph, pw = self.orig.patch_size
            ppf, pph, ppw = f // pt, h // ph, w // pw
            td = self.orig.t_dim

            def flip_time(t):
                grid = t.reshape(ppf, pph, ppw, -1).clone()
                grid[..., :td] = torch.flip(grid[..., :td], dims=[0])
                return grid.reshape(1, ppf * pph * ppw, 1, -1)

            if len(flags) != b:
                raise ValueError(f"{len(flags)} RoPE flags for a batch of {b}")
            rc, rs = flip_time(cos), flip_time(sin)
            cos = torch.cat([rc if fl else cos for fl in flags], dim=0)
            sin = torch.cat([rs if fl else sin for fl in flags], dim=0)
            return cos, sin

    return ReversedTimeRope()


@contextmanager
def reversed_time_rope(dit, flags: Sequence[bool] | None):
    """Within the block, batch rows with a True flag see reversed temporal RoPE positions."""
    if not flags or not any(flags):
        yield
        return
    orig = dit.rope
    dit.rope = _make(orig, list(flags))
    try:
        yield
    finally:
        dit.rope = orig
