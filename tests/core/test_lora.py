"""LoRAs (wanctl/core/models/lora.py): every supported format merges to the hand merge
``W + strength * alpha / rank * up @ down``; one file into both experts gives each the same delta
(diffusers' converter scales its input in place); fused and unfused agree; refusals; LoRAs in
the fingerprint and the artifact record."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_files import BLOCK_LINEARS, assert_merged, expected, make_diffs, make_pairs, write
from wanctl.core.errors import BadInputError
from wanctl.core.files import sha256_file
from wanctl.core.models import lora
from wanctl.core.models.bundle import LoadOptions, open_bundle
from wanctl.core.models.lora import LoraSpec, parse_spec


def _bundle(name, *specs, fused=True, notices=None):
    opts = LoadOptions(device="cpu", dtype="fp32", loras=tuple(specs), lora_fused=fused)
    return open_bundle(name, options=opts, notice=(notices.append if notices is not None else None))


def _base(bundles, name, expert="transformer"):
    return {k: v.clone() for k, v in bundles(name).transformer(expert).state_dict().items()}


SOME = ["blocks.0.attn1.to_q", "blocks.0.attn2.to_k", "blocks.1.attn2.to_out.0", "blocks.1.ffn.net.0.proj",
        "blocks.0.ffn.net.2"]
FORMATS = {
    "diffusers": (SOME, []),
    "diffusers-meta": (SOME, []),
    "diffusers-alpha": (SOME, []),
    "official": (SOME + ["proj_out", "condition_embedder.text_embedder.linear_1"],
                 ["blocks.0.norm2.weight", "blocks.0.attn1.to_q.bias", "blocks.1.attn1.norm_q.weight",
                  "blocks.1.scale_shift_table", "proj_out.weight"]),
    "official-AB": (SOME, ["blocks.1.ffn.net.2.bias"]),
    "kohya": (None, []),  # musubi-tuner LoRAs cover every linear of every block
}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("model", ["tiny-t2v-a14b", "toy-ti2v-5b"])
def test_every_format_merges_to_the_hand_merge(tmp_path, bundles, fmt, model):
    dit = bundles(model).transformer()
    modules, diff_params = FORMATS[fmt]
    if modules is None:
        modules = [f"blocks.{i}.{m}" for i in range(len(dit.blocks)) for m in BLOCK_LINEARS]
    pairs = make_pairs(dit, modules, rank=4, alpha=2.0)
    diffs = make_diffs(dit, diff_params)
    f = write(tmp_path / "l.safetensors", fmt, pairs, diffs)
    b = _bundle(model, LoraSpec(str(f), 0.7))
    for expert in b.experts():
        want = expected(_base(bundles, model, expert), fmt, pairs, diffs, 0.7)
        assert_merged(b.transformer(expert).state_dict(), want)


def test_one_file_into_both_experts_gives_each_the_same_delta(tmp_path, bundles):
    # cross-attention and FFN pairs with alpha != rank: diffusers' converter scales these lora_down
    # tensors in place, so a dict converted once per expert would be scaled twice for the second
    dit = bundles("tiny-t2v-a14b").transformer()
    mods = ["blocks.0.attn2.to_q", "blocks.1.attn2.to_v", "blocks.0.ffn.net.0.proj", "blocks.1.ffn.net.2"]
    pairs = make_pairs(dit, mods, rank=4, alpha=1.0)
    f = write(tmp_path / "l.safetensors", "official", pairs)
    spec = LoraSpec(str(f), 1.5)

    raw = load_file(str(f))
    first, second = lora.convert(raw, spec), lora.convert(raw, spec)
    for m in mods:
        assert torch.equal(first.pairs[m].down, second.pairs[m].down)
        assert torch.equal(first.pairs[m].up, second.pairs[m].up)
    assert all(torch.equal(raw[k], v) for k, v in load_file(str(f)).items())  # the input is untouched

    b = _bundle("tiny-t2v-a14b", spec)
    deltas = []
    for expert in b.experts():
        base = _base(bundles, "tiny-t2v-a14b", expert)
        got = b.transformer(expert).state_dict()
        assert_merged(got, expected(base, "official", pairs, None, 1.5))
        deltas.append({m: got[f"{m}.weight"] - base[f"{m}.weight"] for m in mods})
    for m in mods:
        want = 1.5 * 0.25 * pairs[m][1] @ pairs[m][0]
        for d in deltas:
            assert torch.allclose(d[m], want, rtol=1e-5, atol=1e-6)


def _forward(dit, in_ch, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, in_ch, 2, 8, 8, generator=g)
    ctx = torch.randn(1, 6, dit.config.text_dim, generator=g)
    with torch.no_grad():
        return dit(x, torch.tensor([600.0]), ctx, return_dict=False)[0]


@pytest.mark.parametrize("model", ["tiny-t2v-a14b", "toy-t2v-a14b"])
def test_fused_and_unfused_agree(tmp_path, bundles, model):
    dit = bundles(model).transformer()
    pairs = make_pairs(dit, SOME + ["proj_out"], rank=3, alpha=6.0, seed=5)
    diffs = make_diffs(dit, ["blocks.0.norm2.weight", "blocks.1.attn2.to_q.bias"])
    f = write(tmp_path / "l.safetensors", "official", pairs, diffs)
    g = write(tmp_path / "g.safetensors", "diffusers", make_pairs(dit, ["blocks.1.attn1.to_v"], rank=2, seed=6))
    specs = (LoraSpec(str(f), 0.8), LoraSpec(str(g), -1.3, "low"))
    fused, unfused = _bundle(model, *specs), _bundle(model, *specs, fused=False)
    in_ch = dit.config.in_channels
    for expert in fused.experts():
        a, b = _forward(fused.transformer(expert), in_ch), _forward(unfused.transformer(expert), in_ch)
        base = _forward(bundles(model).transformer(expert), in_ch)
        assert (a - base).abs().max() > 1e-3  # the LoRAs change the output...
        assert ((a - b).abs().max() / a.abs().max()).item() < 1e-5  # ...the same way in both modes
    assert any("lora_A" in n for n, _ in unfused.transformer().named_parameters())
    assert not any("lora_A" in n for n, _ in fused.transformer().named_parameters())


def test_high_and_low_go_to_one_expert_each(tmp_path, bundles):
    dit = bundles("tiny-t2v-a14b").transformer()
    ph, pl = make_pairs(dit, SOME, seed=1), make_pairs(dit, SOME, seed=2)
    fh, fl = write(tmp_path / "h.safetensors", "official", ph), write(tmp_path / "lo.safetensors", "official", pl)
    b = _bundle("tiny-t2v-a14b", parse_spec(f"{fh}:3.0", "high"), parse_spec(f"{fl}:1.5", "low"))
    assert_merged(b.transformer("transformer").state_dict(), expected(_base(bundles, "tiny-t2v-a14b"), "official", ph, None, 3.0))
    assert_merged(b.transformer("transformer_2").state_dict(),
                  expected(_base(bundles, "tiny-t2v-a14b", "transformer_2"), "official", pl, None, 1.5))


def test_parse_spec(tmp_path):
    assert parse_spec("a.safetensors") == LoraSpec("a.safetensors", 1.0)
    assert parse_spec("a.safetensors:0.8") == LoraSpec("a.safetensors", 0.8)
    assert parse_spec("dir/a.safetensors:-1.5e0", "low") == LoraSpec("dir/a.safetensors", -1.5, "low")
    assert parse_spec("C:/loras/a.safetensors") == LoraSpec("C:/loras/a.safetensors", 1.0)  # a ':' in the path
    assert parse_spec("x:y/a.safetensors:2") == LoraSpec("x:y/a.safetensors", 2.0)
    odd = tmp_path / "named:3"  # a file whose name ends like a strength is a file
    odd.write_bytes(b"")
    assert parse_spec(str(odd)) == LoraSpec(str(odd), 1.0)


def _one_line(exc: pytest.ExceptionInfo, contains: str) -> str:
    msg = exc.value.message
    assert "\n" not in msg and contains in msg, msg
    return msg


def test_refusals(tmp_path, bundles):
    dit = bundles("tiny-t2v-a14b").transformer()
    pairs = make_pairs(dit, SOME)
    good = write(tmp_path / "good.safetensors", "official", pairs)

    with pytest.raises(BadInputError) as e:
        lora.parse_specs([str(tmp_path / "missing.safetensors")])
    _one_line(e, "no such file")

    save_file({}, str(tmp_path / "empty.safetensors"))
    with pytest.raises(BadInputError) as e:
        lora.parse_specs([str(tmp_path / "empty.safetensors")])
    _one_line(e, "empty LoRA")

    sd = load_file(str(good))
    sd["diffusion_model.blocks.0.self_attn.q.dora_scale"] = torch.ones(1, 24)
    save_file(sd, str(tmp_path / "dora.safetensors"))
    with pytest.raises(BadInputError) as e:
        lora.parse_specs([str(tmp_path / "dora.safetensors")])
    _one_line(e, "DoRA")

    save_file({"lora_unet_blocks_0_self_attn_q.hada_w1_a": torch.ones(2, 2)}, str(tmp_path / "loha.safetensors"))
    with pytest.raises(BadInputError) as e:
        lora.parse_specs([str(tmp_path / "loha.safetensors")])
    _one_line(e, "LoHa")

    save_file({"blocks.0.attn1.to_q.weight": torch.ones(24, 24)}, str(tmp_path / "full.safetensors"))
    with pytest.raises(BadInputError) as e:
        lora.parse_specs([str(tmp_path / "full.safetensors")])
    _one_line(e, "not a LoRA")

    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(BadInputError) as e:
        lora.parse_specs([str(tmp_path / "junk.safetensors")])
    _one_line(e, "safetensors")

    # another family: a ti2v-5b LoRA touching the output head (48 latent channels) on an A14B model
    other = make_pairs(bundles("tiny-ti2v-5b").transformer(), ["proj_out", "blocks.0.attn1.to_q"])
    f = write(tmp_path / "ti2v.safetensors", "official", other)
    with pytest.raises(BadInputError) as e:
        _bundle("tiny-t2v-a14b", LoraSpec(str(f)))
    _one_line(e, "does not fit")
    # another size: a tiny-model LoRA on the toy (128 wide)
    with pytest.raises(BadInputError) as e:
        _bundle("toy-t2v-a14b", LoraSpec(str(good)))
    _one_line(e, "does not fit")

    # nothing matches: the blocks of a deeper model only
    deep = {f"diffusion_model.blocks.7.self_attn.q.{k}": torch.ones(s) for k, s in (("lora_down.weight", (2, 24)), ("lora_up.weight", (24, 2)))}
    save_file(deep, str(tmp_path / "deep.safetensors"))
    with pytest.raises(BadInputError) as e:
        _bundle("tiny-t2v-a14b", LoraSpec(str(tmp_path / "deep.safetensors")))
    _one_line(e, "not a LoRA for this model")

    with pytest.raises(BadInputError) as e:
        _bundle("tiny-ti2v-5b", LoraSpec(str(good), 1.0, "low"))
    _one_line(e, "single expert")


def test_partial_match_names_what_it_skipped(tmp_path, bundles):
    dit = bundles("tiny-t2v-a14b").transformer()
    pairs = make_pairs(dit, SOME)
    sd = {k: v for k, v in load_file(str(write(tmp_path / "a.safetensors", "official", pairs))).items()}
    for i in (5, 6, 7, 8):  # blocks a 2-block model does not have
        sd[f"diffusion_model.blocks.{i}.self_attn.k.lora_down.weight"] = torch.ones(4, 24)
        sd[f"diffusion_model.blocks.{i}.self_attn.k.lora_up.weight"] = torch.zeros(24, 4)
    save_file(sd, str(tmp_path / "deeper.safetensors"))
    notes: list[str] = []
    b = _bundle("tiny-t2v-a14b", LoraSpec(str(tmp_path / "deeper.safetensors")), notices=notes)
    skipped = [n for n in notes if "skipped" in n]
    assert len(skipped) == 1 and "skipped 4 of its 9 layer(s)" in skipped[0] and "blocks.5.attn1.to_k" in skipped[0]
    assert_merged(b.transformer().state_dict(), expected(_base(bundles, "tiny-t2v-a14b"), "official", pairs, None, 1.0))


def test_loras_are_in_the_fingerprint_and_the_record(tmp_path, bundles):
    dit = bundles("tiny-t2v-a14b").transformer()
    f = write(tmp_path / "a.safetensors", "official", make_pairs(dit, SOME))
    comps = ["transformer", "transformer_2", "text_encoder", "tokenizer", "vae"]
    plain = bundles("tiny-t2v-a14b").record(comps)
    one = _bundle("tiny-t2v-a14b", LoraSpec(str(f), 1.0)).record(comps)
    again = _bundle("tiny-t2v-a14b", LoraSpec(str(f), 1.0)).record(comps)
    other = _bundle("tiny-t2v-a14b", LoraSpec(str(f), 0.5)).record(comps)
    high = _bundle("tiny-t2v-a14b", LoraSpec(str(f), 1.0, "high")).record(comps)
    assert "loras" not in plain
    assert one["fingerprint"] == again["fingerprint"]
    assert len({plain["fingerprint"], one["fingerprint"], other["fingerprint"], high["fingerprint"]}) == 4
    assert high["components"]["transformer"] == one["components"]["transformer"]
    assert high["components"]["transformer_2"] == plain["components"]["transformer_2"]
    assert one["components"]["vae"] == plain["components"]["vae"]
    assert one["loras"] == [{"path": str(f), "sha256": sha256_file(f), "strength": 1.0, "target": "both",
                             "experts": ["transformer", "transformer_2"], "fused": True}]
    assert high["loras"][0]["experts"] == ["transformer"]
    # the text encoder's record (the embedding cache) does not depend on the DiT's LoRAs
    assert "loras" not in _bundle("tiny-t2v-a14b", LoraSpec(str(f))).record(["text_encoder", "tokenizer"])


def test_bf16_file_merges_without_rounding_the_alpha_scale(tmp_path, bundles):
    # alpha / rank = 0.75 folded into a bf16 lora_down would round it to bf16; wanctl folds in float32
    dit = bundles("tiny-t2v-a14b").transformer()
    pairs = {m: (d.bfloat16(), u.bfloat16(), a) for m, (d, u, a) in make_pairs(dit, SOME, rank=4, alpha=3.0).items()}
    f = write(tmp_path / "bf16.safetensors", "official", pairs)
    b = _bundle("tiny-t2v-a14b", LoraSpec(str(f), 1.0))
    assert_merged(b.transformer().state_dict(), expected(_base(bundles, "tiny-t2v-a14b"), "official", pairs, None, 1.0))


def test_gguf_experts_take_loras_as_adapters_only(tmp_path):
    # GGUF layers keep their quantized weights: nothing to fuse into, so --lora-unfused is asked for
    # before anything loads, and with it the LoRA runs as an adapter next to the quantized layer
    from test_quantized import describe, official_sd, wide_dit, write_gguf

    dit = wide_dit()
    desc = describe(tmp_path, write_gguf(tmp_path / "dit-Q8_0.gguf", official_sd(dit)))
    f = write(tmp_path / "l.safetensors", "official", make_pairs(dit, ["blocks.0.attn1.to_q", "blocks.1.ffn.net.0.proj"]))
    with pytest.raises(BadInputError) as e:
        _bundle(str(desc), LoraSpec(str(f)))
    _one_line(e, "--lora-unfused")
    with_lora = _bundle(str(desc), LoraSpec(str(f)), fused=False).transformer()
    plain = _bundle(str(desc)).transformer()
    assert type(with_lora.blocks[0].attn1.to_q).__module__.startswith("peft")
    assert (_forward(with_lora, 48) - _forward(plain, 48)).abs().max() > 1e-3
