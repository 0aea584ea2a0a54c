"""The toy training script: the derived t2v DiT is the i2v one, and a re-run retraces the log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wanctl.core.families import dit_config
from wanctl.toy.train import DIT_SIZES, TOY_PRESETS, _clip_batch, _drop_machine_paths, compare_logs, latent_mask, t2v_from_i2v

MODELS = Path(__file__).resolve().parents[2] / "wanctl" / "toy" / "models"


def test_t2v_from_i2v_is_the_i2v_network_with_a_zero_condition():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    i2v = WanTransformer3DModel(**dit_config(**DIT_SIZES | dict(num_layers=2), in_channels=36, out_channels=16)).eval()
    t2v = t2v_from_i2v(i2v)
    assert t2v.config.in_channels == 16 and t2v.patch_embedding.weight.shape[1] == 16
    x = torch.randn(2, 16, 5, 8, 8)
    text = torch.randn(2, 12, 32)
    t = torch.tensor([700, 120])
    with torch.inference_mode():
        a = i2v(hidden_states=torch.cat([x, torch.zeros(2, 20, 5, 8, 8)], dim=1), timestep=t,
                encoder_hidden_states=text, return_dict=False)[0]
        b = t2v(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
    # the zero channels add exact zeros; only the patch convolution's summation order differs
    assert (a - b).abs().max().item() <= 1e-5 * a.abs().max().item()
    # and a condition that is not zero does change the i2v output (the test is not vacuous)
    with torch.inference_mode():
        c = i2v(hidden_states=torch.cat([x, torch.ones(2, 20, 5, 8, 8)], dim=1), timestep=t,
                encoder_hidden_states=text, return_dict=False)[0]
    assert (a - c).abs().max().item() > 1e-3


def test_assembled_folders_carry_no_machine_path_and_the_shipped_presets(tmp_path):
    """What assemble() writes besides the weights: configs without the training machine's paths
    (as shipped), and the presets file the shipped toys carry."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    WanTransformer3DModel(**dit_config(**DIT_SIZES | dict(num_layers=1), in_channels=48, out_channels=48)).save_pretrained(
        str(tmp_path / "work" / "dit"))
    loaded = WanTransformer3DModel.from_pretrained(str(tmp_path / "work" / "dit"))
    loaded.save_pretrained(str(tmp_path / "out" / "transformer"))
    cfg = tmp_path / "out" / "transformer" / "config.json"
    assert str(tmp_path) in cfg.read_text()  # diffusers records where the model was loaded from
    _drop_machine_paths(tmp_path / "out")
    assert str(tmp_path) not in cfg.read_text() and "_name_or_path" not in json.loads(cfg.read_text())
    for name in ("toy-ti2v-5b", "toy-t2v-a14b", "toy-i2v-a14b"):
        assert (MODELS / name / "wanctl_presets.json").read_text() == json.dumps(TOY_PRESETS, indent=2) + "\n"


def test_latent_mask_follows_the_causal_vae_frame_groups():
    fg = torch.zeros(1, 17, 64, 64, dtype=torch.bool)
    fg[0, 0, 3, 3] = True  # frame 0 -> latent frame 0
    fg[0, 6, 40, 20] = True  # frames 5..8 -> latent frame 2
    m = latent_mask(fg, 8)
    assert m.shape == (1, 5, 8, 8)
    assert m.nonzero().tolist() == [[0, 0, 0, 0], [0, 2, 5, 2]]
    assert latent_mask(fg, 16).nonzero().tolist() == [[0, 0, 0, 0], [0, 2, 2, 1]]


def test_dit_training_clips_never_show_a_held_out_combination():
    import random

    from wanctl.toy.shapes import HELD_OUT, random_clip

    assert len(set(HELD_OUT)) == 12
    _, captions = _clip_batch(random.Random(5), 150, held_out=True)
    held = [f"a {c} {k} moving {d}" for c, k, d in HELD_OUT]
    assert not any(h in cap for cap in captions for h in held)
    # not vacuous: drawn without the filter, the same kind of clips do show them
    rng = random.Random(5)
    shown = [s.combination() for _ in range(150) for s in random_clip(rng.randrange(1 << 30), n_shapes=2).shapes]
    assert any(c in HELD_OUT for c in shown)


def test_compare_logs_pairs_shared_points(tmp_path):
    ref, new = tmp_path / "ref.jsonl", tmp_path / "new.jsonl"
    ref.write_text("\n".join(json.dumps(r) for r in [
        {"stage": "vae-wan2.2", "step": 50, "l1": 0.4, "shape_l1": 0.3}, {"stage": "vae-wan2.2", "step": 100, "l1": 0.2}]))
    new.write_text(json.dumps({"stage": "vae-wan2.2", "step": 50, "l1": 0.41, "shape_l1": 0.3}))
    assert compare_logs(ref, new) == [("vae-wan2.2", 50, "l1", 0.4, 0.41), ("vae-wan2.2", 50, "shape_l1", 0.3, 0.3)]


@pytest.mark.slow
@pytest.mark.skipif(not (MODELS / "toy-ti2v-5b" / "train_log.jsonl").exists(), reason="toy models not shipped in this checkout")
def test_training_rerun_retraces_the_committed_loss_curve(tmp_path):
    """The first 50 steps of the Wan2.2 VAE stage, re-run from the same seed, give the losses the
    shipped model's log recorded (same schedule; only CPU float order may differ)."""
    ref = MODELS / "toy-ti2v-5b" / "train_log.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "wanctl.toy.train", str(tmp_path), "--stages", "vae22", "--stop-after", "50",
         "--threads", "1", "--compare-log", str(ref)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [r for r in compare_logs(ref, tmp_path / "work" / "train_log.jsonl") if r[0] == "vae-wan2.2"]
    assert [r[1] for r in rows] == [50, 50]
    for stage, step, key, ref_v, new_v in rows:
        assert abs(new_v - ref_v) <= 0.02 * abs(ref_v), (stage, step, key, ref_v, new_v)
    assert not (tmp_path / "work" / "vae-wan2.2").exists()  # --stop-after saves nothing
