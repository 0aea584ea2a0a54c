"""The one interface every model layout answers: diffusers folders (the built-ins too), official
Wan2.2 folders, ComfyUI single files and JSON model descriptions.

A layout knows where a model's parts are and what they are; it reads configs and file headers
only until a component is loaded. The bundle code (fingerprints, loading, verification) asks
the layout and never looks at which one it is. Which layout a path is: :mod:`detect`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from wanctl.core.families import FamilySpec

COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer")
WEIGHTED = ("transformer", "transformer_2", "vae", "text_encoder")  # the components with weights


class ModelLayout(ABC):
    """Where one model's components are, and how to read them.

    ``kind`` names the layout in artifact metadata ("diffusers", "official-folder",
    "official-files"); ``path`` is the folder (or the DiT file of a single-file model);
    ``notes`` are things worth telling the user (a missing optional part...).
    """

    kind: str
    path: Path
    family: FamilySpec
    notes: list[str]

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name

    def experts(self) -> list[str]:
        return ["transformer", "transformer_2"] if self.family.experts == 2 else ["transformer"]

    @abstractmethod
    def model_index(self) -> dict:
        """model_index.json as the diffusers format has it (boundary_ratio...)."""

    @abstractmethod
    def has(self, component: str) -> bool:
        """Whether the component is there."""

    @abstractmethod
    def config(self, component: str) -> dict:
        """The diffusers (DiT, VAE) / transformers (text encoder) config of a component ({} for the
        tokenizer); a one-line ModelError when it is missing or unreadable."""

    def configs(self) -> dict[str, dict]:
        """Configs of the weighted components present."""
        return {c: self.config(c) for c in WEIGHTED if self.has(c)}

    @abstractmethod
    def files(self, component: str) -> list[Path]:
        """The files a component is read from, in a fixed order (what its fingerprint hashes)."""

    @abstractmethod
    def fingerprint_config(self, component: str) -> dict | None:
        """The part of the config that a component's fingerprint covers (None: none)."""

    @abstractmethod
    def load(self, component: str, dtype: Any = None) -> Any:
        """The component as a diffusers / transformers module on the CPU (eval mode, no gradients),
        floating weights in ``dtype`` (a torch dtype; None: float32) as the library's own
        ``from_pretrained`` would keep them; the tokenizer ignores ``dtype``."""

    def weight_format(self, component: str) -> str | None:
        """How a component's weight files store it, for the artifact metadata: "gguf Q8_0",
        "fp8_scaled (float8_e4m3fn)", "fp8_e4m3fn", "bf16"... (headers only); None when the
        layout does not say (its library's own files)."""
        return None

    @abstractmethod
    def verify(self) -> list[dict]:
        """Check every component without loading it: one row per component,
        {component, status: ok|missing|error, detail}."""

    def verify_components(self) -> list[str]:
        """The components :meth:`verify` checks, in order."""
        return self.experts() + ["vae", "text_encoder", "tokenizer"]
