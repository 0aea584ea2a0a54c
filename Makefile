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

demo: install
	@mkdir -p $(OUT)
	$(BIN)/python -m wanctl.toy.assets $(OUT)/assets
	$(WANCTL) encode $(OUT)/assets/clip.mp4 -o $(OUT)/clip.latent.safetensors --force
	$(WANCTL) info $(OUT)/clip.latent.safetensors
	$(WANCTL) decode $(OUT)/clip.latent.safetensors -o $(OUT)/clip.decoded.mp4 --force
	@echo
	@echo "demo outputs in $(OUT)/:"
	@echo "  source clip      $(OUT)/assets/clip.mp4"
	@echo "  latent artifact  $(OUT)/clip.latent.safetensors   (wanctl info ...)"
	@echo "  decoded video    $(OUT)/clip.decoded.mp4"

test: install
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache build
