"""Start-up: `wanctl --help` and `wanctl info FILE` against `python -c "import diffusers"`.

Whole commands, measured alternately (median of 5 pairs). Target: --help at most 1/10 of the
diffusers import. Neither wanctl command imports torch (checked by a test with -X importtime).

    python benchmarks/startup.py
"""

from __future__ import annotations

import os
import sys
import tempfile

from _runner import headline, measure_pair, run_command, setup_env, table

setup_env()


def main(pairs: int = 5) -> None:
    import torch

    from wanctl.core.io.artifact import Artifact, new_meta, write_artifact

    tmp = tempfile.mkdtemp(prefix="wanctl-bench-")
    art = os.path.join(tmp, "a.safetensors")
    write_artifact(art, Artifact({"latents": torch.zeros(1, 16, 21, 60, 104)},
                                 new_meta("latent", family="t2v-a14b", command="bench", noise_level=0.0,
                                          video={"width": 832, "height": 480, "frames": 81, "fps": 16})))
    py = sys.executable
    diffusers = [py, "-c", "import diffusers; diffusers.AutoencoderKLWan"]
    rows = []
    res = {}
    for name, cmd in (("wanctl --help", [py, "-m", "wanctl", "--help"]), ("wanctl info FILE", [py, "-m", "wanctl", "info", art])):
        pair = measure_pair(lambda: run_command(cmd), lambda: run_command(diffusers), pairs=pairs, warmup=0)
        rows.append([name, pair.a, pair.b, pair.ratio])
        res[name] = pair.ratio
    print(f"whole commands, median of {pairs} alternating pairs; reference: python -c 'import diffusers; diffusers.AutoencoderKLWan'")
    print(table(["command", "command s", "import diffusers s", "ratio"], rows))
    headline("startup_help_over_import_diffusers", res["wanctl --help"])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
