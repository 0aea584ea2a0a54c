# wanctl: two commands on a fresh machine.
#   make demo   create .venv, install wanctl, run a real chained workflow on a built-in model
#   make test   same install, then the whole test suite
#
# torch is pinned here (not in pyproject.toml): 2.13.0 is the CPU build this project is tested on.
# On a CUDA machine install your own torch build into the venv first; pip keeps it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= demo-out
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
WANCTL := $(BIN)/wanctl

.PHONY: install demo test clean bench
.DELETE_ON_ERROR:

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The edit-by-first-frame workflow: encode the example clip, invert it once, denoise the same
# noise with two new first frames, decode everything.
DEMO_MODEL ?= tiny-ti2v-5b
DEMO_STEPS ?= 20
demo: install
	@mkdir -p $(OUT)/edits
	$(BIN)/python -m wanctl.toy.assets $(OUT)/assets
	$(WANCTL) encode $(OUT)/assets/clip.mp4 -m $(DEMO_MODEL) -o $(OUT)/clip.latent.safetensors --force
	$(WANCTL) invert $(OUT)/clip.latent.safetensors -p "a red circle moving right and a blue square moving up" \
		--steps $(DEMO_STEPS) -o $(OUT)/clip.noise.safetensors --force
	$(WANCTL) info $(OUT)/clip.noise.safetensors
	$(WANCTL) denoise $(OUT)/clip.noise.safetensors -i $(OUT)/assets/targets \
		-p "a green triangle moving right and a blue square moving up" -o $(OUT)/edits --force
	$(WANCTL) decode $(OUT)/clip.latent.safetensors -o $(OUT)/clip.decoded.mp4 --force
	$(WANCTL) decode $(OUT)/edits/green-triangle.safetensors -o $(OUT)/edits/green-triangle.mp4 --force
	$(WANCTL) decode $(OUT)/edits/yellow-square.safetensors -o $(OUT)/edits/yellow-square.mp4 --force
	@echo
	@echo "demo outputs in $(OUT)/ (model $(DEMO_MODEL)):"
	@echo "  source clip        $(OUT)/assets/clip.mp4"
	@echo "  latent / noise     $(OUT)/clip.latent.safetensors, $(OUT)/clip.noise.safetensors   (wanctl info FILE)"
	@echo "  decoded source     $(OUT)/clip.decoded.mp4"
	@echo "  edited videos      $(OUT)/edits/green-triangle.mp4, $(OUT)/edits/yellow-square.mp4"
	@echo "  target frames      $(OUT)/assets/targets/*.png"

test: install
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache build
