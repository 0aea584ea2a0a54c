"""Memory: peak RSS of decode (streamed, streamed with --vae-tiling, and a whole-clip
`vae.decode` as diffusers does it) at 416x240, and of encode on a long 97-frame clip (streamed against
reading the whole clip and calling `vae.encode` once). Each variant is its own process; peak RSS
comes from the kernel's rusage of that process. Ratios are variant / wanctl's default.

The VAE is a random Wan2.1-type AutoencoderKLWan with base_dim 32 (activations of a realistic
width per pixel; the built-in tiny VAE's are too small to matter).

    python benchmarks/memory.py                  # 416x240 (what `make bench` runs, about 2.5 minutes)
    python benchmarks/memory.py --size 832x480   # the official 480p size (about 8 minutes)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from _runner import headline, peak_rss_mb, setup_env, table

setup_env()

# 416x240 keeps `make bench` under 10 minutes on 2 cores; the activations still dwarf the pixels
WIDTH, HEIGHT, DECODE_FRAMES, LONG_FRAMES = 416, 240, 17, 97

WHOLE_DECODE = """
import sys, torch
from diffusers import AutoencoderKLWan
from wanctl.core.io.artifact import read_artifact
from wanctl.core.models.codec import denormalize
vae = AutoencoderKLWan.from_pretrained(sys.argv[1]).eval()
z = read_artifact(sys.argv[2]).latents
with torch.inference_mode():
    video = vae.decode(denormalize(z, vae)).sample
"""
WHOLE_ENCODE = """
import sys, torch
from diffusers import AutoencoderKLWan
from wanctl.core.models.codec import to_pixels
from wanctl.core.io.video import read_video_frames
vae = AutoencoderKLWan.from_pretrained(sys.argv[1]).eval()
frames = read_video_frames(sys.argv[2])
with torch.inference_mode():
    z = vae.encode(to_pixels(frames)).latent_dist.mode()
"""


def main() -> None:
    global WIDTH, HEIGHT
    if "--size" in sys.argv:
        WIDTH, HEIGHT = (int(v) for v in sys.argv[sys.argv.index("--size") + 1].split("x"))
    import torch
    from diffusers import AutoencoderKLWan

    from wanctl.core.models.builtin import _vae_kwargs
    from wanctl.core.models.bundle import resolve_model
    from wanctl.core.io.video import VideoWriter
    from wanctl.toy.shapes import example_clip, render_frame

    tmp = tempfile.mkdtemp(prefix="wanctl-bench-")
    folder = os.path.join(tmp, "model")
    shutil.copytree(resolve_model("tiny-t2v-a14b").path, folder)
    shutil.rmtree(os.path.join(folder, "vae"))
    torch.manual_seed(0)
    AutoencoderKLWan(**dict(_vae_kwargs("wan2.1"), base_dim=32)).save_pretrained(os.path.join(folder, "vae"))
    clip = example_clip(WIDTH, HEIGHT, LONG_FRAMES)
    long_mp4 = os.path.join(tmp, "long.mp4")
    with VideoWriter(long_mp4, 16) as w:
        for t in range(LONG_FRAMES):
            w.write(render_frame(clip, t))
    py = sys.executable
    env = dict(os.environ, WANCTL_NO_CACHE="1")
    lat = os.path.join(tmp, "lat.safetensors")
    from _runner import run_command

    run_command([py, "-m", "wanctl", "encode", long_mp4, "-m", folder, "--frames", str(DECODE_FRAMES), "-o", lat], env)
    script_d, script_e = os.path.join(tmp, "whole_decode.py"), os.path.join(tmp, "whole_encode.py")
    open(script_d, "w").write(WHOLE_DECODE)
    open(script_e, "w").write(WHOLE_ENCODE)
    baseline = peak_rss_mb([py, "-c", "import torch, diffusers; from diffusers import AutoencoderKLWan"], env)
    dec = peak_rss_mb([py, "-m", "wanctl", "decode", lat, "-m", folder, "-o", os.path.join(tmp, "a.mp4")], env)
    dec_tiled = peak_rss_mb([py, "-m", "wanctl", "decode", lat, "-m", folder, "--vae-tiling", "-o", os.path.join(tmp, "b.mp4")], env)
    dec_whole = peak_rss_mb([py, script_d, os.path.join(folder, "vae"), lat], env)
    enc = peak_rss_mb([py, "-m", "wanctl", "encode", long_mp4, "-m", folder, "-o", os.path.join(tmp, "e.safetensors")], env)
    enc_whole = peak_rss_mb([py, script_e, os.path.join(folder, "vae"), long_mp4], env)
    print(f"peak RSS in MB, one process per variant; import torch + diffusers alone: {baseline:.0f} MB")
    print(table(["workload", "variant", "peak RSS MB", "above baseline MB", "ratio to wanctl default"], [
        [f"decode {DECODE_FRAMES} frames {WIDTH}x{HEIGHT}", "wanctl (streamed)", dec, dec - baseline, 1.0],
        ["", "wanctl --vae-tiling", dec_tiled, dec_tiled - baseline, (dec_tiled - baseline) / (dec - baseline)],
        ["", "whole-clip vae.decode", dec_whole, dec_whole - baseline, (dec_whole - baseline) / (dec - baseline)],
        [f"encode {LONG_FRAMES} frames {WIDTH}x{HEIGHT}", "wanctl (streamed)", enc, enc - baseline, 1.0],
        ["", "whole clip + vae.encode", enc_whole, enc_whole - baseline, (enc_whole - baseline) / (enc - baseline)],
    ]))
    headline("decode_whole_over_streamed_memory", (dec_whole - baseline) / (dec - baseline))
    headline("encode_whole_over_streamed_memory", (enc_whole - baseline) / (enc - baseline))


if __name__ == "__main__":
    main()
