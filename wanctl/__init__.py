"""wanctl: a command-line toolkit for Wan2.2 video diffusion workflows.

Importing this package must stay cheap (no torch, no diffusers): `wanctl --help`
and `wanctl info` rely on it.
"""

__version__ = "0.1.0"
