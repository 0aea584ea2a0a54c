"""Built-in models, all in exactly the diffusers layout of the real Wan2.2 repositories
(model_index.json, scheduler/, text_encoder/, tokenizer/, transformer/, transformer_2/, vae/) and
loaded through the same code path as real weights:

* ``toy-*``: small models trained on synthetic shape clips by ``python -m wanctl.toy.train``,
  shipped in the package (fp16). They make real (if simple) videos: the default built-ins. Each
  carries its own presets (``wanctl_presets.json``: 64x64, 17 frames, 16 fps, 30 steps).
* ``tiny-*``: tiny random-weight models generated offline from a fixed seed into the cache dir
  on first use; noise-like output, for fast tests of the code paths. Official presets.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wanctl.core.errors import ModelError
from wanctl.core.models.diffusers_layout import model_index_for

# Bump when the generated weights or layout change: old cache folders are then ignored.
BUILTIN_VERSION = 2
SEED = 20250728
TEXT_DIM = 32


@dataclass(frozen=True)
class Builtin:
    name: str
    family: str
    summary: str
    packaged: bool = False  # shipped in wanctl/toy/models (trained), not generated


BUILTINS: dict[str, Builtin] = {
    "toy-ti2v-5b": Builtin("toy-ti2v-5b", "ti2v-5b", "TI2V-5B architecture trained on synthetic shape clips (64x64)", True),
    "toy-t2v-a14b": Builtin("toy-t2v-a14b", "t2v-a14b", "T2V-A14B architecture trained on synthetic shape clips (64x64)", True),
    "toy-i2v-a14b": Builtin("toy-i2v-a14b", "i2v-a14b", "I2V-A14B architecture trained on synthetic shape clips (64x64)", True),
    "tiny-ti2v-5b": Builtin("tiny-ti2v-5b", "ti2v-5b", "tiny random-weight TI2V-5B architecture, for tests"),
    "tiny-t2v-a14b": Builtin("tiny-t2v-a14b", "t2v-a14b", "tiny random-weight T2V-A14B architecture, for tests"),
    "tiny-i2v-a14b": Builtin("tiny-i2v-a14b", "i2v-a14b", "tiny random-weight I2V-A14B architecture, for tests"),
}
PACKAGED = Path(__file__).resolve().parents[2] / "toy" / "models"  # wanctl/toy/models


def available(name: str) -> bool:
    b = BUILTINS[name]
    return not b.packaged or (PACKAGED / name / "model_index.json").exists()


def default_for(family: str | None) -> str:
    """The built-in used when no model is given: the trained toy of the family when shipped."""
    fam = family or "ti2v-5b"
    for prefix in ("toy-", "tiny-"):
        name = prefix + fam
        if name in BUILTINS and available(name):
            return name
    return "tiny-ti2v-5b"


def builtin_dir(name: str) -> Path:
    from wanctl.core.env import cache_dir

    if BUILTINS[name].packaged:
        return PACKAGED / name
    return cache_dir() / "models" / f"{name}-v{BUILTIN_VERSION}"


def ensure(name: str, notice: Callable[[str], None] | None = None) -> Path:
    """Return the folder of a built-in model, generating it on first use (tiny-*)."""
    dest = builtin_dir(name)
    if (dest / "model_index.json").exists():
        return dest
    if BUILTINS[name].packaged:
        raise ModelError(f"built-in model {name} is missing from this installation ({dest}); "
                         "reinstall wanctl or run `python -m wanctl.toy.train`")
    if notice:
        notice(f"generating built-in model '{name}' in {dest} (first use only)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create the cache folder {dest.parent}: {e.strerror}") from None
    # a unique temporary folder (not per pid: pids repeat across nodes sharing one cache)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp = work / dest.name
    try:
        build(name, tmp)
        try:
            os.replace(tmp, dest)
        except OSError:
            # another process finished first (e.g. make -j): keep theirs
            if not (dest / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def init(name: str, dest: str | os.PathLike, force: bool = False) -> Path:
    """Write a built-in model to ``dest`` (``wanctl model init``), atomically."""
    from wanctl.core.files import atomic_path

    if name not in BUILTINS:
        raise ModelError(f"unknown built-in model {name!r}; known: {', '.join(BUILTINS)}")
    src = ensure(name)
    with atomic_path(dest, force=force, directory=True) as tmp:
        shutil.copytree(src, tmp)
    return Path(dest)


# --------------------------------------------------------------------------- generation

_WORDS = (
    "a an the of on in with and is to from at over under "
    "red green blue yellow orange purple white black gray cyan magenta pink "
    "circle square triangle ball box shape shapes object dot "
    "moving moves left right up down slowly quickly fast slow bouncing "
    "background plain gradient dark light video clip scene camera static "
    "cat dog person walking beach park car street city night day"
).split()


def _build_tokenizer(out: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    # Ids follow umT5: <pad>=0, </s>=1, <unk>=2. Whole words score above single characters, so
    # known words become one token and anything else falls back to characters.
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -2.0 - 0.001 * i) for i, w in enumerate(_WORDS)]
    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-\u2581"
    vocab += [(c, -8.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    wrapped = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)
    wrapped.model_max_length = 512
    wrapped.save_pretrained(str(out))
    return len(vocab)


def _vae_kwargs(kind: str) -> dict:
    from wanctl.core.families import vae_config
    from wanctl.core.models.vae_stats import WAN21_MEAN, WAN21_STD, WAN22_MEAN, WAN22_STD

    mean, std = (WAN21_MEAN, WAN21_STD) if kind == "wan2.1" else (WAN22_MEAN, WAN22_STD)
    sizes = dict(base_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[])
    if kind == "wan2.2":
        sizes["decoder_base_dim"] = 4
    return vae_config(kind, **sizes, latents_mean=list(mean), latents_std=list(std))


def _dit_kwargs(in_ch: int, out_ch: int) -> dict:
    from wanctl.core.families import dit_config

    return dit_config(num_attention_heads=2, attention_head_dim=12, in_channels=in_ch, out_channels=out_ch,
                      text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=32)


def scheduler_config(flow_shift: float) -> dict:
    """The UniPC scheduler config the real Wan2.2 diffusers repos ship."""
    return {
        "_class_name": "UniPCMultistepScheduler",
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "disable_corrector": [],
        "dynamic_thresholding_ratio": 0.995,
        "final_sigmas_type": "zero",
        "flow_shift": flow_shift,
        "lower_order_final": True,
        "num_train_timesteps": 1000,
        "predict_x0": True,
        "prediction_type": "flow_prediction",
        "rescale_betas_zero_snr": False,
        "sample_max_value": 1.0,
        "solver_order": 2,
        "solver_p": None,
        "solver_type": "bh2",
        "steps_offset": 0,
        "thresholding": False,
        "timestep_spacing": "linspace",
        "trained_betas": None,
        "use_beta_sigmas": False,
        "use_exponential_sigmas": False,
        "use_flow_sigmas": True,
        "use_karras_sigmas": False,
    }


def write_text_components(out: Path) -> None:
    """tokenizer/ and text_encoder/ (a tiny random umT5 encoder from SEED), shared by built-ins."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    vocab_size = _build_tokenizer(out / "tokenizer")
    torch.manual_seed(SEED)
    te_cfg = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=128,  # as umT5-XXL (official checkpoints do not store it)
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    UMT5EncoderModel(te_cfg).eval().save_pretrained(str(out / "text_encoder"), safe_serialization=True)


def write_pipeline_files(out: Path, family: str) -> None:
    """scheduler/ and model_index.json as the real Wan2.2 diffusers repos have them."""
    (out / "scheduler").mkdir(exist_ok=True)
    # As in the real repos: A14B conversions ship flow_shift 3.0 (not the official default),
    # TI2V-5B ships 5.0. wanctl takes the shift from its presets, never from this file.
    flow_shift = 5.0 if family == "ti2v-5b" else 3.0
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config(flow_shift), indent=2))
    (out / "model_index.json").write_text(json.dumps(model_index_for(family), indent=2))


def build(name: str, out: Path) -> None:
    """Generate a built-in model folder deterministically from SEED."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from wanctl.core.families import FAMILIES
    from wanctl.core.models.runtime import quiet_libraries

    quiet_libraries()
    b = BUILTINS[name]
    fam = FAMILIES[b.family]
    out.mkdir(parents=True)
    write_text_components(out)

    torch.manual_seed(SEED + 1)
    vae = AutoencoderKLWan(**_vae_kwargs(fam.vae)).eval()
    vae.save_pretrained(str(out / "vae"), safe_serialization=True)

    torch.manual_seed(SEED + 2)
    dit = WanTransformer3DModel(**_dit_kwargs(fam.dit_in_channels, fam.dit_out_channels)).eval()
    dit.save_pretrained(str(out / "transformer"), safe_serialization=True)
    if fam.experts == 2:
        torch.manual_seed(SEED + 3)
        dit2 = WanTransformer3DModel(**_dit_kwargs(fam.dit_in_channels, fam.dit_out_channels)).eval()
        dit2.save_pretrained(str(out / "transformer_2"), safe_serialization=True)
    write_pipeline_files(out, fam.name)
