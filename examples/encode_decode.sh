#!/usr/bin/env bash
# Round trip a clip through the VAE of a model, piping the latent between the two steps.
#   examples/encode_decode.sh CLIP.mp4 OUT.mp4 [MODEL]
set -euo pipefail
clip=${1:?usage: encode_decode.sh CLIP OUT.mp4 [MODEL]}
out=${2:?usage: encode_decode.sh CLIP OUT.mp4 [MODEL]}
model=${3:-${WANCTL_MODEL:-tiny-ti2v-5b}}
wanctl encode "$clip" -m "$model" -o - | wanctl decode - -m "$model" -o "$out"
