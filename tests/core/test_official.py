"""Official Wan2.2 checkpoints and ComfyUI single files (wanctl.core.models.official and its helpers).

A synthetic official-layout folder is written from each built-in tiny model (diffusers layout) by
renaming its weights to the official key names with an inverse mapping written here, independently
of the module. So that two consistently wrong mappings cannot pass, the written files must contain
official key names read off the official code (Wan-Video/Wan2.2 wan/modules/model.py, vae2_1.py,
vae2_2.py, t5.py) and the diffusers conversion script, hard-coded below.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wanctl.core.errors import ModelError
from wanctl.core.families import dit_config, vae_config
from wanctl.core.models import official_configs, official_keys, weights
from wanctl.core.models.official import OfficialLayout
from wanctl.core.models.official_detect import detect_official
from wanctl.core.models.vae_stats import WAN21_MEAN, WAN21_STD, WAN22_MEAN, WAN22_STD

TINY = {"ti2v-5b": "tiny-ti2v-5b", "t2v-a14b": "tiny-t2v-a14b", "i2v-a14b": "tiny-i2v-a14b"}
MODEL_TYPE = {"ti2v-5b": "ti2v", "t2v-a14b": "t2v", "i2v-a14b": "i2v"}
# relative_attention_max_distance is not stored in umT5 weights; the tiny encoder uses the real
# value (128), so no override is needed -- the mechanism is still exercised with the real value.
TINY_OVERRIDES = {"text_encoder": {"relative_attention_max_distance": 128}}

# Official names, verified in the official code (module attribute names).
OFFICIAL_DIT_KEYS = [
    "patch_embedding.weight",
    "patch_embedding.bias",
    "text_embedding.0.weight",
    "text_embedding.2.bias",
    "time_embedding.0.weight",
    "time_embedding.2.weight",
    "time_projection.1.weight",
    "blocks.0.self_attn.q.weight",
    "blocks.0.self_attn.o.bias",
    "blocks.0.self_attn.norm_q.weight",
    "blocks.1.cross_attn.k.weight",
    "blocks.1.cross_attn.norm_k.weight",
    "blocks.0.norm3.weight",
    "blocks.0.norm3.bias",
    "blocks.0.ffn.0.weight",
    "blocks.0.ffn.2.bias",
    "blocks.0.modulation",
    "head.head.weight",
    "head.modulation",
]
# For the tiny VAEs' structure (dim_mult [1,1,1,1], num_res_blocks 1, temperal_downsample F,T,T)
OFFICIAL_VAE_KEYS = {
    "wan2.1": [
        "encoder.conv1.weight",
        "encoder.downsamples.0.residual.0.gamma",
        "encoder.downsamples.0.residual.2.weight",
        "encoder.downsamples.1.resample.1.weight",  # downsample2d after level 0
        "encoder.downsamples.3.time_conv.weight",  # downsample3d after level 1
        "encoder.middle.1.to_qkv.weight",
        "encoder.head.0.gamma",
        "encoder.head.2.weight",
        "conv1.weight",
        "conv2.bias",
        "decoder.conv1.weight",
        "decoder.middle.2.residual.6.weight",
        "decoder.upsamples.2.time_conv.weight",  # 2 res blocks (num_res_blocks + 1), then upsample3d
        "decoder.upsamples.3.shortcut.weight",  # level 1 starts at in_dim // 2: a shortcut conv
        "decoder.upsamples.8.resample.1.weight",  # upsample2d after level 2
        "decoder.upsamples.10.residual.6.weight",
        "decoder.head.2.bias",
    ],
    "wan2.2": [
        "encoder.conv1.weight",
        "encoder.downsamples.0.downsamples.0.residual.0.gamma",
        "encoder.downsamples.0.downsamples.1.resample.1.weight",
        "encoder.downsamples.1.downsamples.1.time_conv.weight",
        "encoder.downsamples.3.downsamples.0.residual.6.bias",
        "encoder.middle.0.residual.3.gamma",
        "conv1.bias",
        "conv2.weight",
        "decoder.upsamples.0.upsamples.0.residual.2.weight",
        "decoder.upsamples.0.upsamples.2.time_conv.weight",
        "decoder.upsamples.2.upsamples.2.resample.1.weight",
        "decoder.upsamples.3.upsamples.1.residual.6.weight",
        "decoder.head.0.gamma",
    ],
}
OFFICIAL_T5_KEYS = [
    "token_embedding.weight",
    "norm.weight",
    "blocks.0.norm1.weight",
    "blocks.0.attn.q.weight",
    "blocks.0.attn.o.weight",
    "blocks.0.pos_embedding.embedding.weight",
    "blocks.1.norm2.weight",
    "blocks.1.ffn.gate.0.weight",
    "blocks.1.ffn.fc1.weight",
    "blocks.1.ffn.fc2.weight",
]


# --------------------------------------------------------------------------- inverse mappings


def dit_to_official(key: str) -> str:
    """diffusers WanTransformer3DModel name -> official WanModel name."""
    top = {
        "condition_embedder.text_embedder.linear_1": "text_embedding.0",
        "condition_embedder.text_embedder.linear_2": "text_embedding.2",
        "condition_embedder.time_embedder.linear_1": "time_embedding.0",
        "condition_embedder.time_embedder.linear_2": "time_embedding.2",
        "condition_embedder.time_proj": "time_projection.1",
        "proj_out": "head.head",
        "patch_embedding": "patch_embedding",
    }
    block = {
        "attn1.to_q": "self_attn.q",
        "attn1.to_k": "self_attn.k",
        "attn1.to_v": "self_attn.v",
        "attn1.to_out.0": "self_attn.o",
        "attn1.norm_q": "self_attn.norm_q",
        "attn1.norm_k": "self_attn.norm_k",
        "attn2.to_q": "cross_attn.q",
        "attn2.to_k": "cross_attn.k",
        "attn2.to_v": "cross_attn.v",
        "attn2.to_out.0": "cross_attn.o",
        "attn2.norm_q": "cross_attn.norm_q",
        "attn2.norm_k": "cross_attn.norm_k",
        "norm2": "norm3",
        "ffn.net.0.proj": "ffn.0",
        "ffn.net.2": "ffn.2",
    }
    if key == "scale_shift_table":
        return "head.modulation"
    m = re.match(r"^blocks\.(\d+)\.scale_shift_table$", key)
    if m:
        return f"blocks.{m.group(1)}.modulation"
    m = re.match(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
    if m:
        return f"blocks.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}"
    mod, _, param = key.rpartition(".")
    return f"{top[mod]}.{param}"


_RES_INV = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.weight": "residual.2.weight",
    "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma",
    "conv2.weight": "residual.6.weight",
    "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight",
    "conv_shortcut.bias": "shortcut.bias",
}


def _res(rest: str) -> str:
    return _RES_INV.get(rest, rest)  # resample.1.* / time_conv.* keep their names


def vae_to_official(vae) -> dict[str, str]:
    """diffusers AutoencoderKLWan names -> official WanVAE_ names, walking the module structure."""
    residual = vae.config.is_residual
    up_start, n = [], 0  # flat decoder index where each Wan2.1 up block starts
    for blk in vae.decoder.up_blocks:
        up_start.append(n)
        n += len(blk.resnets) + (1 if getattr(blk, "upsamplers", None) else 0)
    out = {}
    for k in vae.state_dict():
        side, _, rest = k.partition(".")
        if k.startswith(("quant_conv.", "post_quant_conv.")):
            out[k] = ("conv1." if k.startswith("quant") else "conv2.") + k.split(".", 1)[1]
        elif rest.startswith("conv_in."):
            out[k] = f"{side}.conv1.{rest.split('.', 1)[1]}"
        elif rest.startswith("norm_out."):
            out[k] = f"{side}.head.0.{rest.split('.', 1)[1]}"
        elif rest.startswith("conv_out."):
            out[k] = f"{side}.head.2.{rest.split('.', 1)[1]}"
        elif (m := re.match(r"mid_block\.resnets\.(\d)\.(.+)$", rest)):
            out[k] = f"{side}.middle.{2 * int(m.group(1))}.{_res(m.group(2))}"
        elif (m := re.match(r"mid_block\.attentions\.0\.(.+)$", rest)):
            out[k] = f"{side}.middle.1.{m.group(1)}"
        elif side == "encoder" and not residual:
            i, sub = re.match(r"down_blocks\.(\d+)\.(.+)$", rest).groups()
            out[k] = f"encoder.downsamples.{i}.{_res(sub)}"
        elif side == "encoder":
            m = re.match(r"down_blocks\.(\d+)\.(resnets\.(\d+)|downsampler)\.(.+)$", rest)
            i = int(m.group(1))
            j = m.group(3) if m.group(3) is not None else len(vae.encoder.down_blocks[i].resnets)
            out[k] = f"encoder.downsamples.{i}.downsamples.{j}.{_res(m.group(4))}"
        elif not residual:
            m = re.match(r"up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.+)$", rest)
            b = int(m.group(1))
            j = int(m.group(3)) if m.group(3) is not None else len(vae.decoder.up_blocks[b].resnets)
            out[k] = f"decoder.upsamples.{up_start[b] + j}.{_res(m.group(4))}"
        else:
            m = re.match(r"up_blocks\.(\d+)\.(resnets\.(\d+)|upsampler)\.(.+)$", rest)
            b = int(m.group(1))
            j = m.group(3) if m.group(3) is not None else len(vae.decoder.up_blocks[b].resnets)
            out[k] = f"decoder.upsamples.{b}.upsamples.{j}.{_res(m.group(4))}"
    return out


def t5_to_official(key: str) -> str | None:
    """transformers UMT5EncoderModel name -> official wan/modules/t5.py T5Encoder name."""
    if key == "encoder.embed_tokens.weight":
        return None  # the same tensor as shared.weight
    if key == "shared.weight":
        return "token_embedding.weight"
    if key == "encoder.final_layer_norm.weight":
        return "norm.weight"
    inv = {
        "layer.0.layer_norm.weight": "norm1.weight",
        "layer.0.SelfAttention.q.weight": "attn.q.weight",
        "layer.0.SelfAttention.k.weight": "attn.k.weight",
        "layer.0.SelfAttention.v.weight": "attn.v.weight",
        "layer.0.SelfAttention.o.weight": "attn.o.weight",
        "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
        "layer.1.layer_norm.weight": "norm2.weight",
        "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
        "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight",
        "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight",
    }
    i, rest = re.match(r"^encoder\.block\.(\d+)\.(.+)$", key).groups()
    return f"blocks.{i}.{inv[rest]}"


# --------------------------------------------------------------------------- fixtures


def _tiny_path(family: str) -> Path:
    from wanctl.core.models.bundle import resolve_model

    return resolve_model(TINY[family]).path


def _ref(family: str, component: str, dtype=torch.float32):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    p = _tiny_path(family) / component
    if component in ("transformer", "transformer_2"):
        return WanTransformer3DModel.from_pretrained(str(p), torch_dtype=dtype).eval()
    if component == "vae":
        return AutoencoderKLWan.from_pretrained(str(p), torch_dtype=dtype).eval()
    if component == "text_encoder":
        return UMT5EncoderModel.from_pretrained(str(p), dtype=dtype).eval()
    return AutoTokenizer.from_pretrained(str(p))


def _official_dit_sd(family: str, component: str) -> tuple[dict, dict]:
    dit = _ref(family, component)
    sd = {dit_to_official(k): v.contiguous() for k, v in dit.state_dict().items()}
    c = dit.config
    cfg = {
        "_class_name": "WanModel",
        "_diffusers_version": "0.33.0",
        "dim": c.num_attention_heads * c.attention_head_dim,
        "eps": c.eps,
        "ffn_dim": c.ffn_dim,
        "freq_dim": c.freq_dim,
        "in_dim": c.in_channels,
        "model_type": MODEL_TYPE[family],
        "num_heads": c.num_attention_heads,
        "num_layers": c.num_layers,
        "out_dim": c.out_channels,
        "text_len": 512,
    }
    return sd, cfg


def _write_dit_dir(d: Path, sd: dict, cfg: dict) -> None:
    """config.json + two safetensors shards + the index, as the official repos ship them."""
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    keys = sorted(sd)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(d / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in ks})
    (d / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _official_vae_sd(family: str) -> dict:
    vae = _ref(family, "vae")
    names = vae_to_official(vae)
    return {names[k]: v.contiguous() for k, v in vae.state_dict().items()}


def _official_t5_sd(family: str) -> dict:
    te = _ref(family, "text_encoder")
    return {o: v.contiguous() for k, v in te.state_dict().items() if (o := t5_to_official(k))}


def write_official_folder(dest: Path, family: str) -> Path:
    """A synthetic official Wan2.2 release folder made from the built-in tiny model of `family`."""
    dest.mkdir(parents=True)
    if family == "ti2v-5b":
        _write_dit_dir(dest / "_dit", *_official_dit_sd(family, "transformer"))
        for f in (dest / "_dit").iterdir():
            f.rename(dest / f.name)
        (dest / "_dit").rmdir()
    else:
        _write_dit_dir(dest / "high_noise_model", *_official_dit_sd(family, "transformer"))
        _write_dit_dir(dest / "low_noise_model", *_official_dit_sd(family, "transformer_2"))
    vae_file = "Wan2.2_VAE.pth" if family == "ti2v-5b" else "Wan2.1_VAE.pth"
    torch.save(_official_vae_sd(family), dest / vae_file)
    torch.save(_official_t5_sd(family), dest / "models_t5_umt5-xxl-enc-bf16.pth")
    shutil.copytree(_tiny_path(family) / "tokenizer", dest / "google" / "umt5-xxl")
    return dest


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = write_official_folder(tmp_path_factory.mktemp("official") / f"Wan2.2-{family}", family)
        return made[family]

    return get


def _assert_same_state(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def _dit_inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_channels, 3, 4, 6, generator=g)
    ctx = torch.randn(2, 7, cfg.text_dim, generator=g)
    return x, torch.tensor([999.0, 250.0]), ctx


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("family", list(TINY))
def test_synthetic_folder_uses_the_official_key_names(folders, family):
    root = folders(family)
    dit_dir = root if family == "ti2v-5b" else root / "high_noise_model"
    dit_keys = set()
    for f in dit_dir.glob("*.safetensors"):
        dit_keys |= set(load_file(str(f)))
    assert set(OFFICIAL_DIT_KEYS) <= dit_keys
    kind = "wan2.2" if family == "ti2v-5b" else "wan2.1"
    vae_keys = set(torch.load(root / ("Wan2.2_VAE.pth" if kind == "wan2.2" else "Wan2.1_VAE.pth"), weights_only=True))
    assert set(OFFICIAL_VAE_KEYS[kind]) <= vae_keys
    assert set(OFFICIAL_T5_KEYS) <= set(torch.load(root / "models_t5_umt5-xxl-enc-bf16.pth", weights_only=True))


@pytest.mark.parametrize("family", list(TINY))
def test_official_folder_loads_exactly_the_diffusers_components(folders, family):
    root = folders(family)
    layout = detect_official(root, overrides=TINY_OVERRIDES)
    assert isinstance(layout, OfficialLayout)
    assert (layout.family.name, layout.kind) == (family, "official-folder")
    experts = ["transformer", "transformer_2"] if family != "ti2v-5b" else ["transformer"]
    assert layout.experts() == experts
    assert layout.has("transformer_2") == (family != "ti2v-5b")
    assert all(layout.has(c) for c in ("vae", "text_encoder", "tokenizer"))
    assert len(layout.files("transformer")) == 2  # sharded
    assert layout.model_index()["boundary_ratio"] == layout.family.preset.boundary
    rows = layout.verify()
    assert [r["component"] for r in rows] == experts + ["vae", "text_encoder", "tokenizer"]
    assert all(r["status"] == "ok" for r in rows), rows

    for comp in experts:
        got, ref = layout.load(comp), _ref(family, comp)
        _assert_same_state(got, ref)
        for k in ("in_channels", "out_channels", "num_layers", "ffn_dim", "text_dim", "freq_dim", "num_attention_heads", "attention_head_dim"):
            assert got.config[k] == ref.config[k], k
        assert list(got.config.patch_size) == list(ref.config.patch_size)
        x, t, ctx = _dit_inputs(ref.config)
        with torch.no_grad():
            torch.testing.assert_close(got(x, t, ctx).sample, ref(x, t, ctx).sample, rtol=0, atol=0)

    vae, ref = layout.load("vae"), _ref(family, "vae")
    _assert_same_state(vae, ref)
    for k, v in ref.config.items():
        if not k.startswith("_") and k != "decoder_base_dim":
            assert vae.config[k] == v, k
    z = torch.randn(1, vae.config.z_dim, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z).sample, ref.decode(z).sample, rtol=0, atol=0)

    te, ref = layout.load("text_encoder"), _ref(family, "text_encoder")
    _assert_same_state(te, ref)
    assert te.encoder.embed_tokens.weight is te.shared.weight
    ids = torch.tensor([[5, 9, 17, 1, 0, 0], [7, 3, 1, 0, 0, 0]])
    with torch.no_grad():
        a = te(input_ids=ids, attention_mask=(ids > 0).long()).last_hidden_state
        b = ref(input_ids=ids, attention_mask=(ids > 0).long()).last_hidden_state
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    tok, ref_tok = layout.load("tokenizer"), _ref(family, "tokenizer")
    assert tok("a red ball moving left").input_ids == ref_tok("a red ball moving left").input_ids


def test_configs_read_no_tensor_data_and_shards_are_read_once(folders, monkeypatch):
    root = folders("t2v-a14b")
    layout = detect_official(root, overrides=TINY_OVERRIDES)

    def boom(self):
        raise AssertionError(f"tensor data read from {self.path}")
        yield  # pragma: no cover

    monkeypatch.setattr(weights.Checkpoint, "tensors", boom)
    configs = layout.configs()  # headers / memory-mapped pickles only
    assert set(configs) == {"transformer", "transformer_2", "vae", "text_encoder"}
    assert configs["transformer"]["in_channels"] == 16 and configs["vae"]["z_dim"] == 16
    assert configs["text_encoder"]["d_model"] == configs["transformer"]["text_dim"] == 32
    monkeypatch.undo()

    reads: list[Path] = []
    original = weights.Checkpoint.tensors

    def counting(self):
        reads.append(self.path)
        yield from original(self)

    monkeypatch.setattr(weights.Checkpoint, "tensors", counting)
    layout.load("transformer_2")
    assert sorted(reads) == sorted(layout.files("transformer_2")) and len(reads) == 2


def test_bf16_keeps_the_modules_diffusers_keeps_in_fp32(folders):
    layout = detect_official(folders("ti2v-5b"), overrides=TINY_OVERRIDES)
    got = layout.load("transformer", dtype="bf16")
    ref = _ref("ti2v-5b", "transformer", dtype=torch.bfloat16)
    _assert_same_state(got, ref)  # same values and the same per-tensor dtypes as from_pretrained
    assert {v.dtype for v in got.state_dict().values()} == {torch.bfloat16, torch.float32}
    te = layout.load("text_encoder", dtype=torch.bfloat16)
    _assert_same_state(te, _ref("ti2v-5b", "text_encoder", dtype=torch.bfloat16))


def _comfy_dit_file(path: Path, family: str, component: str, prefix: str) -> Path:
    sd, _ = _official_dit_sd(family, component)
    save_file({prefix + k: v for k, v in sd.items()}, str(path))
    return path


@pytest.mark.parametrize("family", list(TINY))
def test_comfy_dit_file_family_from_patch_embedding(tmp_path, family):
    f = _comfy_dit_file(tmp_path / "wan2.2_dit_fp16.safetensors", family, "transformer", "model.diffusion_model.")
    layout = detect_official(f)
    assert (layout.family.name, layout.kind) == (family, "official-files")
    assert layout.files("transformer") == [f] and not layout.has("vae") and not layout.has("tokenizer")
    with pytest.raises(ModelError, match="no VAE"):
        layout.load("vae")


def test_comfy_single_files_with_prefix_load_exactly(tmp_path):
    family = "t2v-a14b"
    hi = _comfy_dit_file(tmp_path / "wan2.2_t2v_high_noise_14B_fp16.safetensors", family, "transformer", "model.diffusion_model.")
    lo = _comfy_dit_file(tmp_path / "wan2.2_t2v_low_noise_14B_fp16.safetensors", family, "transformer_2", "model.diffusion_model.")
    vae = tmp_path / "wan_2.1_vae.safetensors"
    save_file(_official_vae_sd(family), str(vae))  # official VAE names, as ComfyUI repackages them
    te = tmp_path / "umt5_xxl_fp16.safetensors"  # transformers names, as ComfyUI ships the encoder
    shutil.copy(_tiny_path(family) / "text_encoder" / "model.safetensors", te)
    overrides = dict(TINY_OVERRIDES, transformer={"num_attention_heads": 2})  # dim 24: no 128-dim heads
    # the low-noise file given first: its name puts it second
    layout = detect_official(lo, transformer_2=hi, vae=vae, text_encoder=te,
                             tokenizer=_tiny_path(family) / "tokenizer", overrides=overrides)
    assert layout.files("transformer") == [hi] and layout.files("transformer_2") == [lo]
    assert any("low-noise" in n for n in layout.notes)
    for comp in ("transformer", "transformer_2", "vae", "text_encoder"):
        _assert_same_state(layout.load(comp), _ref(family, comp))
    ref = _ref(family, "transformer")
    x, t, ctx = _dit_inputs(ref.config, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(layout.load("transformer")(x, t, ctx).sample, ref(x, t, ctx).sample, rtol=0, atol=0)

    # a single A14B expert alone is recognised; the missing one is a clear error
    alone = detect_official(hi, overrides=overrides)
    assert alone.family.name == family and not alone.has("transformer_2")
    with pytest.raises(ModelError, match="low-noise expert is missing"):
        alone.load("transformer_2")
    # without the head count, a non-128-multiple width cannot be guessed
    with pytest.raises(ModelError, match="attention heads"):
        detect_official(hi).config("transformer")


def test_key_mappings_one_line_errors():
    assert official_keys.map_dit_key("blocks.3.cross_attn.norm_k.weight") == "blocks.3.attn2.norm_k.weight"
    assert official_keys.map_dit_key("blocks.0.norm3.bias") == "blocks.0.norm2.bias"
    assert official_keys.map_dit_key("head.modulation") == "scale_shift_table"
    assert official_keys.convert_dit_state_dict({"model.diffusion_model.head.head.weight": 1}) == {"proj_out.weight": 1}
    assert official_keys.map_t5_key("blocks.2.ffn.gate.0.weight") == "encoder.block.2.layer.1.DenseReluDense.wi_0.weight"
    assert official_keys.map_t5_key("encoder.block.0.layer.0.SelfAttention.q.weight") == "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert official_keys.map_t5_key("decoder.block.0.layer.0.SelfAttention.q.weight") is None
    cases = [
        (lambda: official_keys.map_dit_key("img_emb.proj.0.weight"), "Wan2.1 I2V"),
        (lambda: official_keys.map_dit_key("blocks.0.self_attn.q.scale_weight"), "quantized"),
        (lambda: official_keys.map_dit_key("blocks.0.self_attn.x.weight"), "unknown DiT weight"),
        (lambda: official_keys.map_dit_key("blocks.0.attn1.to_q.weight"), "diffusers naming"),
        (lambda: official_keys.vae_key_map(["decoder.upsamples.0.residual.9.weight"]), "unknown VAE weight"),
        (lambda: official_keys.vae_key_map(["encoder.downsamples.0.residual.0.gamma", "decoder.upsamples.1.residual.0.gamma"]), "not contiguous"),
        (lambda: official_keys.map_t5_key("pos_embedding.embedding.weight"), "not the umT5"),
        (lambda: official_keys.map_t5_key("blocks.0.attn.qkv.weight"), "unknown umT5"),
    ]
    for fn, match in cases:
        with pytest.raises(ModelError, match=match) as e:
            fn()
        assert "\n" not in e.value.message


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bad_files_are_refused(folders, tmp_path):
    src = folders("ti2v-5b")
    root = tmp_path / "m"
    shutil.copytree(src, root)
    # an arbitrary pickle is never unpickled
    marker = tmp_path / "unpickled"
    torch.save({"weight": _Payload(marker)}, root / "models_t5_umt5-xxl-enc-bf16.pth")
    layout = detect_official(root, overrides=TINY_OVERRIDES)
    with pytest.raises(ModelError, match="refusing to load"):
        layout.load("text_encoder")
    assert not marker.exists()
    # the other family's VAE
    wrong = detect_official(root, vae=folders("t2v-a14b") / "Wan2.1_VAE.pth", overrides=TINY_OVERRIDES)
    with pytest.raises(ModelError, match="needs the wan2.2 VAE"):
        wrong.load("vae")
    # a missing tensor
    shard = sorted(root.glob("diffusion_pytorch_model-*.safetensors"))[0]
    sd = load_file(str(shard))
    sd.pop(sorted(sd)[0])
    save_file(sd, str(shard))
    with pytest.raises(ModelError, match="missing"):
        detect_official(root).load("transformer")
    rows = {r["component"]: r for r in detect_official(root, overrides=TINY_OVERRIDES).verify()}
    assert rows["transformer"]["status"] == "error" and "1 missing weight" in rows["transformer"]["detail"]
    assert rows["text_encoder"]["status"] == "error" and "refusing" in rows["text_encoder"]["detail"]
    assert rows["vae"]["status"] == "ok"
    # an unknown tensor (Wan2.1 I2V CLIP branch) in a ComfyUI file
    f = _comfy_dit_file(tmp_path / "dit.safetensors", "ti2v-5b", "transformer", "")
    sd = load_file(str(f))
    sd["img_emb.proj.0.weight"] = torch.zeros(2)
    save_file(sd, str(f))
    with pytest.raises(ModelError, match="CLIP image branch"):
        detect_official(f)
    # a quantization format wanctl does not read (per-layer weight_scale without the fp8_scaled
    # marker); fp8_scaled, plain fp8 and GGUF files are tests/core/test_quantized.py's
    quant = tmp_path / "dit_quant.safetensors"
    sd = load_file(str(f))
    sd.pop("img_emb.proj.0.weight")
    sd["blocks.0.self_attn.q.weight_scale"] = torch.ones(())
    save_file(sd, str(quant))
    with pytest.raises(ModelError, match="format wanctl does not read"):
        detect_official(quant)


def test_detection_boundaries(folders, tmp_path):
    assert detect_official(tmp_path / "nope") is None
    assert detect_official(tmp_path) is None  # an empty folder
    assert detect_official(_tiny_path("ti2v-5b")) is None  # diffusers layout
    assert detect_official(_tiny_path("ti2v-5b") / "transformer") is None  # a diffusers component folder
    # incomplete A14B folder
    a14b = tmp_path / "a14b"
    shutil.copytree(folders("i2v-a14b"), a14b)
    shutil.rmtree(a14b / "low_noise_model")
    with pytest.raises(ModelError, match="low_noise_model/ is missing"):
        detect_official(a14b)
    # one DiT with 16 input channels: Wan2.1, not a Wan2.2 family
    w21 = tmp_path / "w21"
    shutil.copytree(folders("t2v-a14b") / "high_noise_model", w21)
    with pytest.raises(ModelError, match="Wan2.1"):
        detect_official(w21)
    # official files without a DiT
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(folders("ti2v-5b") / "Wan2.2_VAE.pth", bare)
    with pytest.raises(ModelError, match="no DiT"):
        detect_official(bare)
    # a VAE file given where the DiT goes
    with pytest.raises(ModelError, match="not a DiT"):
        detect_official(folders("ti2v-5b") / "Wan2.2_VAE.pth")
    # missing optional parts are reported lazily
    part = tmp_path / "part"
    shutil.copytree(folders("ti2v-5b"), part)
    (part / "Wan2.2_VAE.pth").unlink()
    shutil.rmtree(part / "google")
    layout = detect_official(part)
    assert layout.family.name == "ti2v-5b" and not layout.has("vae") and not layout.has("tokenizer")
    assert any("Wan2.2_VAE.pth is missing" in n for n in layout.notes)
    with pytest.raises(ModelError, match="no tokenizer"):
        layout.load("tokenizer")


# --------------------------------------------------------------------------- real sizes (meta device)


# diffusers / transformers configs of the released models. Sources: Wan-Video/Wan2.2
# wan/configs/wan_{t2v_A14B,i2v_A14B,ti2v_5B}.py (dim, ffn_dim, heads, layers, eps),
# wan/modules/model.py (patch (1,2,2), freq_dim 256, text_dim 4096, rope over 1024 positions),
# and diffusers scripts/convert_wan_to_diffusers.py (get_transformer_config for "Wan2.2-*").
_DIT_SIZES = dict(attention_head_dim=128, text_dim=4096, freq_dim=256, rope_max_seq_len=1024)
RELEASED_DIT_CONFIGS: dict[str, dict] = {
    "ti2v-5b": dit_config(**_DIT_SIZES, num_attention_heads=24, in_channels=48, out_channels=48, ffn_dim=14336, num_layers=30),
    "t2v-a14b": dit_config(**_DIT_SIZES, num_attention_heads=40, in_channels=16, out_channels=16, ffn_dim=13824, num_layers=40),
    "i2v-a14b": dit_config(**_DIT_SIZES, num_attention_heads=40, in_channels=36, out_channels=16, ffn_dim=13824, num_layers=40),
}
# The official config.json of each DiT (WanModel naming), as shipped in the Wan-AI repos.
RELEASED_OFFICIAL_DIT_CONFIGS: dict[str, dict] = {
    fam: {
        "_class_name": "WanModel",
        "dim": c["num_attention_heads"] * c["attention_head_dim"],
        "eps": 1e-06,
        "ffn_dim": c["ffn_dim"],
        "freq_dim": 256,
        "in_dim": c["in_channels"],
        "model_type": MODEL_TYPE[fam],
        "num_heads": c["num_attention_heads"],
        "num_layers": c["num_layers"],
        "out_dim": c["out_channels"],
        "text_len": 512,
    }
    for fam, c in RELEASED_DIT_CONFIGS.items()
}
_VAE_COMMON = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], dropout=0.0)
RELEASED_VAE_CONFIGS: dict[str, dict] = {
    # wan/modules/vae2_1.py _video_vae: dim 96, z 16; diffusers convert_vae() uses AutoencoderKLWan() defaults
    "wan2.1": vae_config("wan2.1", **_VAE_COMMON, base_dim=96, latents_mean=list(WAN21_MEAN), latents_std=list(WAN21_STD)),
    # wan/modules/vae2_2.py Wan2_2_VAE: c_dim 160, dec_dim 256, z 48, 12 = 3 x 2 x 2 patchified channels;
    # diffusers vae22_diffusers_config
    "wan2.2": vae_config("wan2.2", **_VAE_COMMON, base_dim=160, decoder_base_dim=256, latents_mean=list(WAN22_MEAN),
                         latents_std=list(WAN22_STD)),
}


def _meta_state_shapes(build) -> dict:
    from accelerate import init_empty_weights

    with init_empty_weights():
        m = build()
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}, sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("family,billions", [("ti2v-5b", 5.00), ("t2v-a14b", 14.29), ("i2v-a14b", 14.29)])
def test_shipped_dit_configs_real_sizes(family, billions):
    from diffusers import WanTransformer3DModel

    cfg = RELEASED_DIT_CONFIGS[family]
    assert cfg["num_attention_heads"] * cfg["attention_head_dim"] == {"ti2v-5b": 3072}.get(family, 5120)
    shapes, n = _meta_state_shapes(lambda: WanTransformer3DModel.from_config(cfg))
    assert abs(n / 1e9 - billions) < 0.01, n
    off = {dit_to_official(k): s for k, s in shapes.items()}
    assert set(OFFICIAL_DIT_KEYS) <= set(off)
    assert f"blocks.{cfg['num_layers'] - 1}.cross_attn.norm_k.weight" in off
    back = {official_keys.map_dit_key(k): s for k, s in off.items()}
    assert back == shapes
    assert official_configs.infer_dit_config(back, RELEASED_OFFICIAL_DIT_CONFIGS[family]) == cfg


def test_shipped_vae_configs_real_sizes():
    from diffusers import AutoencoderKLWan

    for kind, millions in (("wan2.1", 126.9), ("wan2.2", 704.7)):
        cfg = RELEASED_VAE_CONFIGS[kind]
        from accelerate import init_empty_weights

        with init_empty_weights():
            vae = AutoencoderKLWan.from_config(cfg)
        assert abs(sum(p.numel() for p in vae.parameters()) / 1e6 - millions) < 0.1
        names = vae_to_official(vae)
        got_kind, mapping = official_keys.vae_key_map(names.values())
        assert got_kind == kind
        assert {mapping[o]: d for d, o in names.items()} == {d: d for d in names}
        shapes = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
        assert official_configs.infer_vae_config(shapes) == (kind, {k: v for k, v in cfg.items()})
        if kind == "wan2.1":
            # index facts hard-coded in diffusers scripts/convert_wan_to_diffusers.py convert_vae()
            assert mapping["decoder.upsamples.4.shortcut.weight"] == "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"
            assert mapping["decoder.upsamples.3.time_conv.weight"] == "decoder.up_blocks.0.upsamplers.0.time_conv.weight"
            assert mapping["decoder.upsamples.11.resample.1.weight"] == "decoder.up_blocks.2.upsamplers.0.resample.1.weight"
            assert mapping["decoder.upsamples.14.residual.6.weight"] == "decoder.up_blocks.3.resnets.2.conv2.weight"
            assert mapping["encoder.downsamples.5.time_conv.weight"] == "encoder.down_blocks.5.time_conv.weight"


def test_shipped_umt5_config_real_size():
    from transformers import UMT5Config, UMT5EncoderModel

    shapes, _ = _meta_state_shapes(lambda: UMT5EncoderModel(UMT5Config(**official_configs.UMT5_XXL_CONFIG)))
    off = {o: s for k, s in shapes.items() if (o := t5_to_official(k))}
    assert off["token_embedding.weight"] == (256384, 4096)
    assert off["blocks.23.pos_embedding.embedding.weight"] == (32, 64)
    assert off["blocks.0.ffn.gate.0.weight"] == (10240, 4096)
    assert sum(math_prod(s) for s in off.values()) == 5_680_910_336  # the official encoder's parameters
    back = {official_keys.map_t5_key(k): s for k, s in off.items()}
    assert official_configs.infer_umt5_config(back) == official_configs.UMT5_XXL_CONFIG


def math_prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
