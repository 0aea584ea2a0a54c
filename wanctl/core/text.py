"""Prompt embeddings with the umT5 encoder, as the Wan pipelines compute them.

Each prompt is cleaned (HTML entities, whitespace; ftfy when installed, as diffusers does),
tokenized to ``max_length`` tokens, encoded, and the positions past the prompt's own tokens are
zeroed. Distinct prompts are encoded once per run.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Sequence

from wanctl.core import trace

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from wanctl.core.models import ModelBundle

MAX_LENGTH = 512


def clean_prompt(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def encode_prompts(bundle: "ModelBundle", prompts: Sequence[str], max_length: int = MAX_LENGTH) -> dict[str, "torch.Tensor"]:
    """{prompt: (1, max_length, text_dim) float32 embedding} for the distinct prompts given."""
    import torch

    distinct = list(dict.fromkeys(prompts))
    if not distinct:
        return {}
    tok = bundle.tokenizer()
    enc = bundle.text_encoder()
    cleaned = [clean_prompt(p) for p in distinct]
    batch = tok(cleaned, padding="max_length", max_length=max_length, truncation=True,
                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = batch.input_ids, batch.attention_mask
    dev = next(enc.parameters()).device
    trace.event("text_encode", prompts=len(distinct))
    with torch.inference_mode():
        hidden = enc(ids.to(dev), mask.to(dev)).last_hidden_state.float().cpu()
    lengths = mask.gt(0).sum(dim=1)
    out = {}
    for i, p in enumerate(distinct):
        e = torch.zeros(1, max_length, hidden.shape[-1])
        e[0, : lengths[i]] = hidden[i, : lengths[i]]
        out[p] = e
    return out
