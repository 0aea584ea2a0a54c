"""Quantized DiT files (wanctl.core.models.quantized): GGUF, ComfyUI fp8_scaled and plain fp8, a
ComfyUI full checkpoint, and fp8 weight storage (--weights-dtype fp8).

The files are written here the way their tools write them:

* GGUF as city96's ComfyUI-GGUF tools/convert.py + its llama.cpp quantize patch lay Wan files
  out: architecture "wan", official ``WanModel`` key names without prefix, 1-D / small tensors
  and ``*.modulation`` in F32, ``time_embedding.*`` weights in F16, the 5-D patch embedding
  added back in F32 (tools/fix_5d_tensors.py), other 2-D weights quantized (F16 when a row does
  not fill whole blocks). gguf-py writes Q8_0, Q4_0, Q5_0 and BF16; it has no K-quant encoder,
  so Q2_K..Q6_K files are read by the same code path (diffusers' dequantizers) but not written
  here.
* fp8_scaled as ComfyUI's repackaged files: ``weight = (W / scale).to(float8_e4m3fn)``, a
  per-tensor float32 ``scale_weight``, optionally ``scale_input``, and an empty ``scaled_fp8``
  marker tensor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch
from safetensors.torch import save_file

from test_official import RELEASED_DIT_CONFIGS, _official_dit_sd, _official_vae_sd, _ref, _tiny_path, dit_to_official
from wanctl.core.errors import BadInputError, ModelError
from wanctl.core.families import dit_config
from wanctl.core.models.bundle import LoadOptions, open_bundle, verify
from wanctl.core.models.official_detect import detect_official
from wanctl.core.models.quantized import parameter_bytes, store_in_fp8

Q = gguf.GGMLQuantizationType
FP8_MAX = 448.0  # largest float8_e4m3fn value


# --------------------------------------------------------------------------- writers


def wide_dit(seed: int = 0):
    """A ti2v-5b-shaped DiT whose linear layers are 32-multiples wide (Q8_0 blocks are 32 values),
    with one 128-dim head (so no override is needed) and the tiny text encoder's width."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    cfg = dit_config(num_attention_heads=1, attention_head_dim=128, in_channels=48, out_channels=48, text_dim=32,
                     freq_dim=32, ffn_dim=256, num_layers=2, rope_max_seq_len=1024)
    return WanTransformer3DModel(**cfg).eval()


def official_sd(model) -> dict:
    return {dit_to_official(k): v.detach().contiguous() for k, v in model.state_dict().items()}


def write_gguf(path: Path, sd: dict, qtype=Q.Q8_0) -> Path:
    """A GGUF DiT laid out as city96's Wan files are (see the module docstring)."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    w = gguf.GGUFWriter(path=None, arch="wan")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type({Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0, Q.BF16: gguf.LlamaFileType.MOSTLY_BF16}.get(qtype, gguf.LlamaFileType.MOSTLY_Q4_0))
    for k, v in sd.items():
        a = v.float().numpy()
        if a.ndim == 1 or a.size <= 1024 or k.endswith("modulation") or a.ndim > 4:
            t = Q.F32
        elif "time_embedding." in k:
            t = Q.F16
        elif a.shape[-1] % block == 0:
            t = qtype
        else:
            t = Q.F16
        w.add_tensor(k, gguf.quants.quantize(a, t), raw_dtype=t)
    w.write_header_to_file(path=str(path))
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_fp8_scaled(path: Path, sd: dict, prefix: str = "model.diffusion_model.", row_scale: str | None = None):
    """A ComfyUI fp8_scaled DiT: every 2-D weight as fp8 + a float32 scale (``row_scale``: that
    layer gets one scale per output row). Returns the file and the dequantized weights
    ``W_fp8.float() * scale`` (official names) that loading must give."""
    out, deq = {prefix + "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for i, (k, v) in enumerate(sd.items()):
        if v.dim() == 2 and k.endswith(".weight"):
            layer = k[: -len(".weight")]
            if layer == row_scale:
                scale = (v.abs().amax(dim=1) / FP8_MAX).float()
                w8 = (v / scale[:, None]).to(torch.float8_e4m3fn)
                deq[k] = w8.float() * scale[:, None]
            else:
                scale = (v.abs().max() / FP8_MAX).float()
                w8 = (v / scale).to(torch.float8_e4m3fn)
                deq[k] = w8.float() * scale
            out[prefix + k] = w8
            out[prefix + layer + ".scale_weight"] = scale
            if i % 2:
                out[prefix + layer + ".scale_input"] = torch.ones((), dtype=torch.float32)
        else:
            out[prefix + k] = v
            deq[k] = v.float()
    save_file(out, str(path))
    return path, deq


def describe(tmp: Path, transformer: Path, overrides: dict | None = None) -> Path:
    """A ti2v-5b model description: this DiT, an official-named Wan2.2 VAE file and the tiny
    model's text encoder and tokenizer."""
    vae = tmp / "wan2.2_vae.safetensors"
    if not vae.exists():
        save_file(_official_vae_sd("ti2v-5b"), str(vae))
    te = tmp / "umt5_tiny.safetensors"
    if not te.exists():
        shutil.copy(_tiny_path("ti2v-5b") / "text_encoder" / "model.safetensors", te)
    desc = tmp / f"{transformer.stem}.json"
    d = {"transformer": transformer.name, "vae": vae.name, "text_encoder": te.name,
         "tokenizer": str(_tiny_path("ti2v-5b") / "tokenizer")}
    if overrides:
        d["overrides"] = overrides
    desc.write_text(json.dumps(d))
    return desc


def _inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_channels, 3, 4, 6, generator=g)
    ctx = torch.randn(2, 7, cfg.text_dim, generator=g)
    return x, torch.tensor([999.0, 250.0]), ctx


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


# --------------------------------------------------------------------------- GGUF


@pytest.mark.parametrize("qtype,fmt", [(Q.Q8_0, "gguf Q8_0, F16"), (Q.BF16, "gguf BF16, F16")])
def test_gguf_dit_loads_quantized_and_matches_the_fp32_model(tmp_path, qtype, fmt):
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    ref = wide_dit()
    f = write_gguf(tmp_path / f"wan2.2_ti2v_5B-{qtype.name}.gguf", official_sd(ref), qtype)
    layout = detect_official(f)
    assert (layout.family.name, layout.kind) == ("ti2v-5b", "official-files")
    assert layout.weight_format("transformer") == fmt
    cfg = layout.config("transformer")
    for k in ("num_attention_heads", "attention_head_dim", "ffn_dim", "text_dim", "freq_dim", "num_layers"):
        assert cfg[k] == ref.config[k], k
    got = layout.load("transformer", "fp32")
    q = got.blocks[0].attn1.to_q
    assert isinstance(q, GGUFLinear) and isinstance(q.weight, GGUFParameter) and q.weight.dtype == torch.uint8
    assert q.weight.quant_type == qtype  # stays quantized in memory, dequantized per forward
    assert parameter_bytes(got) < 0.6 * parameter_bytes(ref)
    x, t, ctx = _inputs(ref.config)
    with torch.no_grad():
        rel = _rel(got(x, t, ctx).sample, ref(x, t, ctx).sample)
    print(f"{qtype.name}: relative output error {rel:.2e}")
    assert 0 < rel < 1e-2  # quantized (not an fp32 copy), and close
    rows = {r["component"]: r for r in layout.verify()}
    assert rows["transformer"]["status"] == "ok" and fmt in rows["transformer"]["detail"]


def test_gguf_through_a_model_description_and_the_bundle(tmp_path):
    f = write_gguf(tmp_path / "dit-Q8_0.gguf", official_sd(wide_dit()))
    desc = describe(tmp_path, f)
    bundle = open_bundle(str(desc), options=LoadOptions(device="cpu", dtype="bf16"))
    dit = bundle.transformer()
    assert dit.dtype == torch.bfloat16  # compute dtype; non-quantized weights in bf16 (fp32 where diffusers keeps it)
    assert dit.blocks[0].norm2.weight.dtype == torch.float32
    rec = bundle.record(["transformer", "vae"])
    assert rec["weights"] == {"transformer": "gguf Q8_0, F16"}
    rows = {r["component"]: r for r in verify(bundle.spec)}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["transformer"]["fingerprint"] == bundle.fingerprint("transformer")
    # GGUF weights are already quantized: fp8 storage is refused before anything loads
    with pytest.raises(BadInputError, match="GGUF"):
        open_bundle(str(desc), options=LoadOptions(device="cpu", weights_dtype="fp8"))


def test_bad_gguf_files_are_one_line_model_errors(tmp_path):
    good = write_gguf(tmp_path / "good.gguf", official_sd(wide_dit()))
    data = good.read_bytes()
    cases = {"garbage.gguf": b"not a gguf file at all" * 10, "truncated.gguf": data[: len(data) // 2],
             "header-only.gguf": data[:64]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelError, match="not a readable GGUF file") as e:
            detect_official(tmp_path / name)
        assert "\n" not in e.value.message
    # GGUF is read for the DiT only
    with pytest.raises(ModelError, match="DiT only"):
        detect_official(good, vae=good)


# --------------------------------------------------------------------------- fp8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_scaled_file_loads_to_exactly_the_dequantized_weights(tmp_path, dtype):
    sd, _ = _official_dit_sd("ti2v-5b", "transformer")
    f, deq = write_fp8_scaled(tmp_path / "wan2.2_ti2v_5B_fp8_scaled.safetensors", sd, row_scale="blocks.1.ffn.0")
    layout = detect_official(f, overrides={"transformer": {"num_attention_heads": 2}})
    assert layout.weight_format("transformer") == "fp8_scaled (float8_e4m3fn)"
    got = layout.load("transformer", dtype)
    ref = _ref("ti2v-5b", "transformer", dtype=dtype)  # the same per-tensor dtypes as from_pretrained
    state, want = got.state_dict(), ref.state_dict()
    assert sorted(state) == sorted(want)
    scaled = 0
    for k, v in state.items():
        assert v.dtype == want[k].dtype, k
        expected = deq[dit_to_official(k)].to(v.dtype)
        assert torch.equal(v, expected), k
        scaled += sd[dit_to_official(k)].dim() == 2
    assert scaled > 20
    x, t, ctx = _inputs(ref.config)
    with torch.no_grad():
        assert _rel(got(x.to(dtype), t, ctx.to(dtype)).sample, ref(x.to(dtype), t, ctx.to(dtype)).sample) < 0.1
    rows = {r["component"]: r for r in layout.verify()}
    assert rows["transformer"]["status"] == "ok" and "fp8_scaled" in rows["transformer"]["detail"]


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_plain_fp8_files_are_upcast_exactly(tmp_path, fp8):
    sd, _ = _official_dit_sd("ti2v-5b", "transformer")
    stored = {k: (v.to(fp8) if v.dim() == 2 else v) for k, v in sd.items()}
    f = tmp_path / "dit_fp8.safetensors"
    save_file(stored, str(f))
    layout = detect_official(f, overrides={"transformer": {"num_attention_heads": 2}})
    assert layout.weight_format("transformer") == str(fp8).removeprefix("torch.").replace("float8", "fp8")
    got = layout.load("transformer", torch.bfloat16)
    for k, v in got.state_dict().items():
        assert torch.equal(v, stored[dit_to_official(k)].to(v.dtype)), k


def test_weights_dtype_fp8_halves_the_dit_weight_bytes(tmp_path):
    def linear_bytes(m):
        return sum(mod.weight.numel() * mod.weight.element_size() for name, mod in m.named_modules()
                   if isinstance(mod, torch.nn.Linear) and name.startswith("blocks."))

    auto = open_bundle("tiny-ti2v-5b", options=LoadOptions(device="cpu", dtype="bf16"))
    fp8 = open_bundle("tiny-ti2v-5b", options=LoadOptions(device="cpu", dtype="bf16", weights_dtype="fp8"))
    a, b = auto.transformer(), fp8.transformer()
    assert b.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert b.dtype == torch.bfloat16  # what the sampler casts its inputs to
    assert linear_bytes(b) / linear_bytes(a) == 0.5
    print(f"tiny DiT parameter bytes: bf16 {parameter_bytes(a)}, fp8 storage {parameter_bytes(b)}")
    assert parameter_bytes(b) < parameter_bytes(a)
    x, t, ctx = _inputs(a.config)
    with torch.no_grad():
        ya, yb = a(x.bfloat16(), t, ctx.bfloat16()).sample, b(x.bfloat16(), t, ctx.bfloat16()).sample
    assert b.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn  # back to storage after the forward
    rel = _rel(yb, ya)
    print(f"fp8 storage vs bf16: relative output difference {rel:.3f}")
    assert 0 < rel < 0.1
    # rounded weights are other weights: the fingerprint and the metadata say so
    assert fp8.fingerprint("transformer") != auto.fingerprint("transformer")
    assert fp8.fingerprint("vae") == auto.fingerprint("vae")
    assert fp8.record(["transformer"])["weights_dtype"] == "fp8" and "weights_dtype" not in auto.record(["transformer"])

    # the released A14B expert, on the meta device (no memory): about half the bytes overall
    from wanctl.core.models.weights import build_empty

    big = build_empty("transformer", RELEASED_DIT_CONFIGS["t2v-a14b"]).to(torch.bfloat16)
    before = parameter_bytes(big)
    store_in_fp8(big, torch.bfloat16)
    ratio = parameter_bytes(big) / before
    print(f"A14B expert: {before / 2**30:.1f} GiB bf16 -> {parameter_bytes(big) / 2**30:.1f} GiB with fp8 storage ({ratio:.3f}x)")
    assert 0.5 <= ratio < 0.51


# --------------------------------------------------------------------------- full checkpoints


def test_full_checkpoint_uses_its_dit_keys_only(tmp_path, monkeypatch):
    sd, _ = _official_dit_sd("ti2v-5b", "transformer")
    full = {f"model.diffusion_model.{k}": v for k, v in sd.items()}
    full.update({f"vae.{k}": v for k, v in _official_vae_sd("ti2v-5b").items()})
    full["text_encoders.umt5xxl.transformer.shared.weight"] = torch.zeros(4, 4)
    f = tmp_path / "wan2.2_ti2v_5B_aio.safetensors"
    save_file(full, str(f))
    layout = detect_official(f, overrides={"transformer": {"num_attention_heads": 2}})
    assert any("full checkpoint" in n and "text_encoders, vae" in n for n in layout.notes), layout.notes
    assert not layout.has("vae")  # its VAE is not used: given separately, as in ComfyUI's DiT loader
    from wanctl.core.models import weights

    read = []

    original = weights.Checkpoint.tensors

    def spy(self, keys=None):
        for k, t in original(self, keys):
            read.append(k)
            yield k, t

    monkeypatch.setattr(weights.Checkpoint, "tensors", spy)
    got = layout.load("transformer")
    assert read and all(k.startswith("model.diffusion_model.") for k in read)  # the other parts are never read
    ref = _ref("ti2v-5b", "transformer")
    for k, v in got.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k


def test_fp8_scaled_text_encoder_loads_to_the_dequantized_weights(tmp_path):
    """ComfyUI ships the umT5 encoder as umt5_xxl_fp8_e4m3fn_scaled.safetensors (transformers names)."""
    from safetensors.torch import load_file

    sd = load_file(str(_tiny_path("ti2v-5b") / "text_encoder" / "model.safetensors"))
    te, deq = write_fp8_scaled(tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors", sd, prefix="")
    dit = tmp_path / "dit.safetensors"
    save_file(_official_dit_sd("ti2v-5b", "transformer")[0], str(dit))
    layout = detect_official(dit, text_encoder=te, overrides={"transformer": {"num_attention_heads": 2}})
    assert layout.weight_format("text_encoder") == "fp8_scaled (float8_e4m3fn)"
    got = layout.load("text_encoder", torch.float32)
    for k, v in got.state_dict().items():
        src = "shared.weight" if k == "encoder.embed_tokens.weight" and k not in deq else k
        assert torch.equal(v, deq[src]), k
    rows = {r["component"]: r for r in layout.verify()}
    assert rows["text_encoder"]["status"] == "ok", rows["text_encoder"]
