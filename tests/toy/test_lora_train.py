"""The toy LoRA trainer (wanctl/toy/lora_train.py): the file it saves loads through wanctl's LoRA
loader into the toy model and gives the model the trainer ran (same weights, same forward)."""

from __future__ import annotations

import copy

import torch

from wanctl.core.models.bundle import LoadOptions, open_bundle
from wanctl.core.models.lora import LoraSpec
from wanctl.toy.lora_train import BLOCK_LINEARS, add_adapters, latent_weights, recoloured_clips, save_lora


def test_saved_lora_loads_into_the_toy_and_matches_the_trained_adapters(tmp_path, bundles):
    base = bundles("toy-ti2v-5b").transformer()
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    trained = copy.deepcopy(base)
    rank, alpha = 4, 2.0
    adapters = add_adapters(trained, rank, alpha, seed=0)
    assert len(adapters) == len(trained.blocks) * len(BLOCK_LINEARS)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B starts at zero (a no-op): give it values, as training would
        for a in adapters.values():
            a.lora_B.copy_(torch.randn(a.lora_B.shape, generator=g) * 0.05)
    path = save_lora(tmp_path / "l.safetensors", {k: (a.lora_A, a.lora_B) for k, a in adapters.items()}, rank, alpha)

    loaded = open_bundle("toy-ti2v-5b", options=LoadOptions(device="cpu", dtype="fp32", cache=False,
                                                            loras=(LoraSpec(str(path), 1.0),))).transformer()
    merged = loaded.state_dict()
    for name, a in adapters.items():
        want = base_sd[f"{name}.weight"] + (alpha / rank) * a.lora_B.detach() @ a.lora_A.detach()
        assert torch.allclose(merged[f"{name}.weight"], want, atol=1e-6), name
    untouched = [k for k in base_sd if not any(k.startswith(f"{n}.") for n in adapters)]
    assert untouched and all(torch.equal(merged[k], base_sd[k]) for k in untouched)

    x = torch.randn(2, 48, 5, 2, 2, generator=g)
    t = torch.full((2, 5), 500)
    text = torch.randn(2, 12, 32, generator=g)
    with torch.inference_mode():
        y_trained = trained(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        y_loaded = loaded(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        y_base = base(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
    assert torch.allclose(y_trained, y_loaded, atol=1e-4)
    assert (y_trained - y_base).abs().max().item() > 1e-2  # the LoRA does change the output


def test_recoloured_clips_keep_the_captions_and_show_one_colour():
    from wanctl.toy.shapes import COLORS

    videos, captions, fg = recoloured_clips(4, "green", seed=5, masks=True)
    assert videos.shape == (4, 17, 64, 64, 3) and len(captions) == 4 and fg.shape == (4, 17, 64, 64)
    # loss weights on the 5 x 4 x 4 latent grid: 10 where a shape is, 1 elsewhere
    w = latent_weights(fg, (5, 4, 4), 10.0)
    assert w.shape == (4, 1, 5, 4, 4) and set(w.unique().tolist()) == {1.0, 10.0}
    ys, xs = fg[0, 0].nonzero()
    assert w[0, 0, 0, ys // 16, xs // 16].eq(10.0).all()  # latent frame 0 is pixel frame 0
    assert any("green" not in c for c in captions)  # the captions name the colours the clips had
    green = torch.tensor(COLORS["green"]).float()
    for v in videos:
        px = torch.from_numpy(v[0].reshape(-1, 3)).float()
        others = [torch.tensor(c).float() for name, c in COLORS.items() if name != "green"]
        near_green = ((px - green).norm(dim=1) < 5).sum()
        near_other = sum(((px - c).norm(dim=1) < 5).sum() for c in others)
        assert near_green > 20 and near_other == 0
