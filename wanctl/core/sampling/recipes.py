"""Sampling recipes (``--preset NAME``): named values for the sampling options, for models
trained to be sampled one exact way.

``lightning``: the 4-step distilled models and LoRAs (Wan2.2-Lightning, lightx2v). They were
trained on four Euler steps at the model timesteps 1000, 750, 500, 250 shifted by 5, that is
the noise levels 1, 15/16, 5/6 and 5/8 (then 0), without CFG. On A14B the default boundaries
(t2v 0.875, i2v 0.9) give two high-noise and two low-noise steps. The DiT is called at
``int(1000 s)`` (1000, 937, 833, 625) as on every wanctl grid.

A recipe fills in options the user did not give; ``--sigmas``, ``--solver`` and ``--guidance``
still override it. It defines the grid, so ``--steps``/``--shift``/``--grid`` are refused with
it (they would silently replace the grid the model was distilled on).
"""

from __future__ import annotations

from dataclasses import dataclass

from wanctl.core.errors import BadInputError


@dataclass(frozen=True)
class Recipe:
    name: str
    sigmas: tuple[float, ...]  # the whole grid, its final 0 included (as parse_sigmas returns it)
    solver: str
    guidance: float
    summary: str


RECIPES = {
    "lightning": Recipe("lightning", (1.0, 15 / 16, 5 / 6, 5 / 8, 0.0), "euler", 1.0,
                        "4 Euler steps on the distilled grid 1, 0.9375, 0.8333, 0.625, no CFG (Lightning / lightx2v)"),
}


@dataclass(frozen=True)
class SamplingOptions:
    """The sampling options as given (None: not given)."""

    steps: int | None = None
    shift: float | None = None
    grid: str | None = None
    sigmas: tuple[float, ...] | None = None
    solver: str | None = None
    guidance: float | None = None
    guidance_low: float | None = None


def apply_recipe(name: str | None, given: SamplingOptions) -> SamplingOptions:
    """The options with the recipe's values where none was given."""
    if name is None:
        return given
    recipe = RECIPES.get(name)
    if recipe is None:
        raise BadInputError(f"unknown --preset {name!r}; use one of {', '.join(RECIPES)}")
    clashing = [f"--{k}" for k in ("steps", "shift", "grid") if getattr(given, k) is not None]
    if clashing:
        raise BadInputError(f"--preset {name} samples on its own exact grid; it takes no {'/'.join(clashing)} "
                            "(give --sigmas to change the grid)")
    return SamplingOptions(
        sigmas=given.sigmas if given.sigmas is not None else recipe.sigmas,
        solver=given.solver or recipe.solver,
        guidance=recipe.guidance if given.guidance is None else given.guidance,
        guidance_low=given.guidance_low,  # None: the low-noise expert takes --guidance, as without a recipe
    )
