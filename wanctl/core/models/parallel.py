"""One video across GPUs: diffusers' own context parallelism (Ulysses) on each DiT, and CFG
parallelism (two rank groups, one per CFG branch), under a launcher such as ``torchrun``.

Layout: ``world = cfg * ulysses`` ranks, on a device mesh with dimensions ("cfg", "ring",
"ulysses") (ring is always 1). Each expert gets ``ContextParallelConfig(ulysses_degree=N)`` on
that mesh, so diffusers' hooks split the token sequence across the ulysses ranks of a cfg group
and gather it back after the last block. With cfg=2, cfg group 0 computes the conditional branch
and group 1 the unconditional one; the two velocities are exchanged with one all-gather over the
"cfg" dimension and every rank combines them the same way (sampling/velocity.py).

Every rank runs the same plan from the same seeded noise (drawn on the CPU), encodes the prompt
and runs the VAE itself (simplest to keep correct: nothing but the DiT is distributed); rank 0
alone writes artifacts and prints (commands/_report.py keeps the other ranks quiet but for errors).

No torch at import time: the layout and its checks are data (``--dry-run`` shows them).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wanctl.core import trace
from wanctl.core.errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

KEYS = ("ulysses", "cfg")


@dataclass(frozen=True)
class ParallelLayout:
    """``--parallel``: the degrees, and this process's place (from the launcher's RANK / WORLD_SIZE)."""

    ulysses: int = 1
    cfg: int = 1
    rank: int = 0
    world_size: int = 1

    @property
    def degree(self) -> int:
        return self.ulysses * self.cfg

    @property
    def writes(self) -> bool:
        """Only rank 0 writes artifacts (and decodes, and prints)."""
        return self.rank == 0

    @property
    def cfg_rank(self) -> int:
        """Which CFG branch this rank computes (0 conditional, 1 unconditional) under cfg=2."""
        return self.rank // self.ulysses

    def describe(self) -> str:
        return (f"{self.degree} ranks: cfg={self.cfg} x ulysses={self.ulysses} (mesh cfg x ring x ulysses = "
                f"{self.cfg} x 1 x {self.ulysses}); rank 0 writes; text encoder and VAE run on every rank")

    def to_meta(self) -> dict:
        return {"ulysses": self.ulysses, "cfg": self.cfg, "world_size": self.degree, "writer_rank": 0,
                "text_encoder_and_vae": "every rank"}


def parse_parallel(value: str | None) -> ParallelLayout | None:
    """'ulysses=2', 'cfg=2,ulysses=2' -> a layout (rank and world size from the environment)."""
    if value is None:
        return None
    degrees: dict[str, int] = {}
    for part in value.replace(" ", "").replace("x", ",").split(","):
        if not part:
            continue
        key, eq, num = part.partition("=")
        if not eq or key not in KEYS or not num.isdigit() or int(num) < 1:
            raise BadInputError(f"--parallel {value!r}: expected KEY=N items separated by commas, KEY one of "
                                f"{', '.join(KEYS)}, e.g. ulysses=2 or cfg=2,ulysses=2")
        if key in degrees:
            raise BadInputError(f"--parallel {value!r}: {key} given twice")
        degrees[key] = int(num)
    if not degrees:
        raise BadInputError(f"--parallel {value!r}: give ulysses=N and/or cfg=2")
    if degrees.get("cfg", 1) not in (1, 2):
        raise BadInputError(f"--parallel cfg={degrees['cfg']}: CFG has two branches, so cfg is 1 or 2")
    rank = int(os.environ.get("RANK", "0") or 0)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return ParallelLayout(ulysses=degrees.get("ulysses", 1), cfg=degrees.get("cfg", 1), rank=rank, world_size=world)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_layout(layout: ParallelLayout, *, heads: int, tokens: list[int], uses_cfg: bool, attention: str | None,
                 launched: bool) -> None:
    """Refuse a layout that cannot run, before any weights load (one line, exit 3).

    ``tokens``: the DiT sequence length of every frame count the plan runs on. ``launched``:
    check the launcher's world size too (not for ``--dry-run``)."""
    n = layout.ulysses
    if n > 1:
        bad = [what for what, count in (("heads", heads), *(("tokens", t) for t in tokens)) if count % n]
        if bad:
            good = [d for d in _divisors(heads) if all(t % d == 0 for t in tokens) and 1 < d]
            counts = f"{heads} attention heads and {', '.join(map(str, sorted(set(tokens))))} tokens"
            what = " and ".join(sorted(set(bad), key=bad.index))
            hint = (f"use ulysses={max(d for d in good if d < n) if any(d < n for d in good) else good[0]}"
                    if good else "no ulysses degree > 1 divides both; use cfg=2 alone or another --size")
            raise BadInputError(f"--parallel ulysses={n} does not divide the {what} ({counts}); {hint}")
        backend = attention or "native"
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        # the backends wanctl offers (no hub downloads) that diffusers can run context-parallel
        ok = sorted(b for b in _AttentionBackendRegistry._supports_context_parallel if not b.endswith("_hub"))
        if backend not in ok:
            raise BadInputError(f"--attention {backend} does not support context parallelism; use one of {', '.join(ok)}")
    if layout.cfg == 2 and not uses_cfg:
        raise BadInputError("--parallel cfg=2: this run uses no CFG (guidance 1 on every step); drop cfg=2")
    if launched:
        if layout.world_size != layout.degree:
            how = (f"torchrun --nproc-per-node {layout.degree} -m wanctl ..." if layout.world_size == 1
                   else f"--parallel degrees multiplying to WORLD_SIZE={layout.world_size}")
            raise BadInputError(f"--parallel needs {layout.degree} processes (cfg x ulysses), this launch has "
                                f"{layout.world_size}; use {how}")
        if not 0 <= layout.rank < layout.world_size:
            raise BadInputError(f"RANK={layout.rank} is outside WORLD_SIZE={layout.world_size}")


def local_device(device: str) -> str:
    """Each rank of a CUDA run computes on its own GPU (LOCAL_RANK, modulo the GPUs it sees, so
    that one visible GPU per rank also works); a CPU run stays on the CPU."""
    if device.startswith("cuda"):
        import torch

        mine = f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0) % max(1, torch.cuda.device_count())}"
        if device not in ("cuda", mine):
            raise BadInputError(f"--device {device}: under --parallel this rank computes on {mine}; pass --device cuda")
        return mine
    if device != "cpu":
        raise BadInputError(f"--parallel runs on cuda (nccl) or cpu (gloo), not {device}")
    return device


# --------------------------------------------------------------------------- the process group and mesh

_MESH = None  # the device mesh of this process, built once


def mesh(layout: ParallelLayout, device: str):
    """The process group (nccl on CUDA, gloo on the CPU) and the (cfg, ring, ulysses) device mesh."""
    global _MESH
    if _MESH is None:
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        kind = torch.device(device).type
        if not dist.is_initialized():
            if kind == "cuda":
                torch.cuda.set_device(torch.device(device))
            dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
        _MESH = init_device_mesh(kind, (layout.cfg, 1, layout.ulysses), mesh_dim_names=("cfg", "ring", "ulysses"))
    return _MESH


@contextmanager
def _cpu_device_count():
    """diffusers' parallel-config resolution (ModelMixin._resolve_parallel_config) computes
    ``rank % torch.accelerator.device_count()``, which divides by zero on a CPU-only machine;
    while it runs for a CPU model, the count reads 1 (the device it picks is then cpu:0, the CPU)."""
    import torch

    if torch.accelerator.device_count() > 0:
        yield
        return
    real = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = real


def enable(module, layout: ParallelLayout, device: str) -> None:
    """Context parallelism on one DiT (each expert, on the same mesh)."""
    m = mesh(layout, device)
    if layout.ulysses == 1:
        return  # cfg parallelism alone: the DiT runs whole on each rank
    import logging

    from diffusers import ContextParallelConfig

    # diffusers warns on every call that the API is experimental: not for the user of a CLI
    logging.getLogger("diffusers.models.modeling_utils").setLevel(logging.ERROR)
    with _cpu_device_count():
        module.enable_parallelism(config=ContextParallelConfig(ulysses_degree=layout.ulysses, mesh=m))
    cp = module._parallel_config.context_parallel_config
    trace.event("context_parallel", rank=layout.rank, ulysses=cp.ulysses_degree,
                ulysses_rank=cp._ulysses_local_rank, cfg_rank=layout.cfg_rank)


def gather_branches(layout: ParallelLayout, v: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """cfg=2: this rank's branch velocity -> (conditional, unconditional), from both cfg groups."""
    import torch
    import torch.distributed as dist

    group = _MESH.get_group("cfg")
    parts = [torch.empty_like(v) for _ in range(2)]
    dist.all_gather(parts, v.contiguous(), group=group)
    return parts[0], parts[1]

