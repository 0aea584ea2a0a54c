#!/usr/bin/env bash
# The edit-by-first-frame workflow as one shell pipeline: every step reads the previous one's
# artifact on stdin and writes its own to stdout (`-`), nothing in between touches the disk.
#
#   examples/edit.sh CLIP.mp4 TARGET.png OUT.mp4 [OUT.latent.safetensors]
#
# Settings come from the environment (same names and defaults as examples/Makefile).
set -euo pipefail
clip=${1:?usage: edit.sh CLIP TARGET.png OUT.mp4 [OUT.latent.safetensors]}
target=${2:?usage: edit.sh CLIP TARGET.png OUT.mp4 [OUT.latent.safetensors]}
out=${3:?usage: edit.sh CLIP TARGET.png OUT.mp4 [OUT.latent.safetensors]}
latent=${4:-/dev/null}
: "${WANCTL:=wanctl}" "${MODEL:=tiny-ti2v-5b}" "${FRAMES:=17}" "${STEPS:=8}"
: "${SOURCE_PROMPT:=a red circle moving right and a blue square moving up}"
: "${TARGET_PROMPT:=a new shape moving right and a blue square moving up}"

$WANCTL encode "$clip" -m "$MODEL" --frames "$FRAMES" -o - \
  | $WANCTL invert - -p "$SOURCE_PROMPT" --steps "$STEPS" -o - \
  | $WANCTL denoise - -i "$target" -p "$TARGET_PROMPT" -o - \
  | tee "$latent" \
  | $WANCTL decode - -o "$out" --force
