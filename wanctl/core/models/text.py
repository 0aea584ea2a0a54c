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

    from wanctl.core.models.bundle import ModelBundle

MAX_LENGTH = 512


def clean_prompt(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def encode_prompts(bundle: "ModelBundle", prompts: Sequence[str], max_length: int = MAX_LENGTH,
                   notice=None) -> dict[str, "torch.Tensor"]:
    """{prompt: (1, max_length, text_dim) float32 embedding} for the distinct prompts given.

    Embeddings come from the cache when they are there (keyed by the text encoder's and the
    tokenizer's fingerprints, the prompt, the length and the dtype); the text encoder is loaded
    only if some prompt is missing.
    """
    from wanctl.core.io import cache
    
    distinct = list(dict.fromkeys(prompts))
    out: dict = {}
    keys: dict = {}
    use_cache = cache.enabled(not bundle.options.cache)
    if use_cache:
        base = {"text_encoder": bundle.fingerprint("text_encoder"), "tokenizer": bundle.fingerprint("tokenizer"),
                "max_length": max_length, "dtype": bundle.options.dtype}
        for p in distinct:
            keys[p] = cache.key_of(dict(base, prompt=p))
            hit = cache.get("embeddings", keys[p], notice)
            if hit is not None:
                out[p] = _pad(hit.tensors["embedding"], max_length)
    missing = [p for p in distinct if p not in out]
    if missing:
        computed = _encode(bundle, missing, max_length)
        out.update({p: _pad(e, max_length) for p, e in computed.items()})
        par = bundle.options.parallel
        if use_cache and (par is None or par.writes):  # --parallel: rank 0 writes the cache
            for p, e in computed.items():
                cache.put("embeddings", keys[p], _embedding_artifact(bundle, p, e, max_length))
    return out


def _pad(e: "torch.Tensor", max_length: int) -> "torch.Tensor":
    import torch

    full = torch.zeros(1, max_length, e.shape[-1])
    full[0, : e.shape[0]] = e.float()
    return full


def _encode(bundle: "ModelBundle", prompts: list[str], max_length: int) -> dict[str, "torch.Tensor"]:
    """{prompt: (tokens, dim)} over each prompt's own tokens (the rest is zero padding)."""
    import torch

    tok = bundle.tokenizer()
    enc = bundle.text_encoder()
    cleaned = [clean_prompt(p) for p in prompts]
    batch = tok(cleaned, padding="max_length", max_length=max_length, truncation=True,
                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = batch.input_ids, batch.attention_mask
    dev = bundle.compute_device("text_encoder")
    trace.event("text_encode", prompts=len(prompts))
    with torch.inference_mode():
        hidden = enc(ids.to(dev), mask.to(dev)).last_hidden_state.float().cpu()
    lengths = mask.gt(0).sum(dim=1)
    return {p: hidden[i, : lengths[i]].clone() for i, p in enumerate(prompts)}


def _embedding_artifact(bundle: "ModelBundle", prompt: str, emb: "torch.Tensor", max_length: int):
    from wanctl.core.io.artifact import Artifact, new_meta

    meta = new_meta("embedding", family=bundle.family.name, command="text-encode", noise_level=0.0,
                    model=bundle.record(["text_encoder", "tokenizer"]),
                    params={"prompt": prompt, "max_length": max_length, "dtype": bundle.options.dtype,
                            "tokens": int(emb.shape[0])})
    return Artifact({"embedding": emb.contiguous()}, meta)
