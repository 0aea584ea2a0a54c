"""Random-weight models sized so that compute dominates (not the 2-layer test models)."""

from __future__ import annotations

from pathlib import Path


def compute_bundle(family: str = "t2v-a14b", dim_heads: int = 4, head_dim: int = 64, layers: int = 4,
                   ffn: int = 1024, text_dim: int = 64, device: str = "cpu", seed: int = 0):
    """A ModelBundle whose experts are one random WanTransformer3DModel of the given size (both
    A14B experts share it: the timing is the same). Nothing is written to disk."""
    import torch
    from diffusers import WanTransformer3DModel

    from wanctl.core.families import FAMILIES, dit_config
    from wanctl.core.models.bundle import LoadOptions, ModelBundle, ModelSpec
    from wanctl.core.models.diffusers_layout import DiffusersLayout

    fam = FAMILIES[family]
    cfg = dit_config(num_attention_heads=dim_heads, attention_head_dim=head_dim, in_channels=fam.dit_in_channels,
                     out_channels=fam.dit_out_channels, text_dim=text_dim, freq_dim=256, ffn_dim=ffn, num_layers=layers,
                     rope_max_seq_len=1024)
    torch.manual_seed(seed)
    dit = WanTransformer3DModel(**cfg).eval().requires_grad_(False).to(device)
    index = {"boundary_ratio": fam.preset.boundary, "transformer_2": ["diffusers", "WanTransformer3DModel"] if fam.experts == 2 else [None, None]}
    layout = DiffusersLayout(Path("<memory>"), fam, model_index=index,
                             configs={"transformer": dict(cfg, _class_name="WanTransformer3DModel")})
    spec = ModelSpec(name=f"bench-{family}-d{dim_heads * head_dim}-l{layers}", layout=layout)
    bundle = ModelBundle(spec, LoadOptions(device=device, dtype="fp32"))
    bundle._loaded["transformer"] = dit
    if fam.experts == 2:
        bundle._loaded["transformer_2"] = dit
    return bundle
