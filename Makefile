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

.PHONY: install demo test clean bench quality
.DELETE_ON_ERROR:

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The edit-by-first-frame workflow on the trained toy model: encode a clip of a red circle moving
# right, invert it once, denoise that one noise with two new first frames (a green square, a
# yellow triangle) and their prompts, decode everything, and put the videos side by side.
# Midpoint inversion (2nd order) and guidance 2.5: the inversion runs without CFG, and a low
# guidance keeps the edit near the inverted trajectory, so the motion carries over best.
DEMO_MODEL ?= toy-ti2v-5b
DEMO_STEPS ?= 30
DEMO_GUIDANCE ?= 2.5
SRC_PROMPT := a red circle moving right on a black background
# Then text-to-video on the A14B toy (both experts, the model's presets) and first-last-frame to
# video from the source clip's first and last frames on the i2v toy.
T2V_PROMPT ?= a blue square moving down on a white background
demo: install
	@mkdir -p $(OUT)/edits
	$(BIN)/python -m wanctl.toy.assets $(OUT)/assets --demo
	@printf 'first_frame,prompt,output\nassets/targets/green-square.png,a green square moving right on a black background,edits/green-square.safetensors\nassets/targets/yellow-triangle.png,a yellow triangle moving right on a black background,edits/yellow-triangle.safetensors\n' > $(OUT)/targets.csv
	$(WANCTL) encode $(OUT)/assets/clip.mp4 -m $(DEMO_MODEL) -o $(OUT)/clip.latent.safetensors --force
	$(WANCTL) invert $(OUT)/clip.latent.safetensors -p "$(SRC_PROMPT)" --steps $(DEMO_STEPS) --solver midpoint \
		-o $(OUT)/clip.noise.safetensors --force
	$(WANCTL) info $(OUT)/clip.noise.safetensors
	$(WANCTL) denoise $(OUT)/clip.noise.safetensors --manifest $(OUT)/targets.csv -o $(OUT)/edits \
		--guidance $(DEMO_GUIDANCE) --force
	$(WANCTL) decode $(OUT)/clip.latent.safetensors -o $(OUT)/clip.decoded.mp4 --force
	$(WANCTL) decode $(OUT)/edits/green-square.safetensors -o $(OUT)/edits/green-square.mp4 --force
	$(WANCTL) decode $(OUT)/edits/yellow-triangle.safetensors -o $(OUT)/edits/yellow-triangle.mp4 --force
	$(WANCTL) t2v -m toy-t2v-a14b -p "$(T2V_PROMPT)" --seed 1 -o $(OUT)/t2v.safetensors --decode $(OUT)/t2v.mp4 --force
	$(WANCTL) flf2v -m toy-i2v-a14b -i $(OUT)/assets/first.png -l $(OUT)/assets/last.png -p "$(SRC_PROMPT)" --seed 1 \
		-o $(OUT)/flf2v.safetensors --decode $(OUT)/flf2v.mp4 --force
	$(BIN)/python -m wanctl.toy.compare $(OUT)/side-by-side.png $(OUT)/assets/clip.mp4 $(OUT)/clip.decoded.mp4 \
		$(OUT)/edits/green-square.mp4 $(OUT)/edits/yellow-triangle.mp4 $(OUT)/t2v.mp4 $(OUT)/flf2v.mp4
	@echo
	@echo "demo outputs in $(OUT)/ (model $(DEMO_MODEL)):"
	@echo "  source clip        $(OUT)/assets/clip.mp4"
	@echo "  latent / noise     $(OUT)/clip.latent.safetensors, $(OUT)/clip.noise.safetensors   (wanctl info FILE)"
	@echo "  decoded source     $(OUT)/clip.decoded.mp4"
	@echo "  edited videos      $(OUT)/edits/green-square.mp4, $(OUT)/edits/yellow-triangle.mp4"
	@echo "  text-to-video      $(OUT)/t2v.mp4  (toy-t2v-a14b: $(T2V_PROMPT))"
	@echo "  first-last frame   $(OUT)/flf2v.mp4  (toy-i2v-a14b, from the source's first and last frames)"
	@echo "  side by side       $(OUT)/side-by-side.png  (rows: source, decoded source, two edits, t2v, flf2v; every 4th frame)"

test: install
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# Benchmarks: each prints a table and a final `name: value` line (ratios measured side by side).
# `make bench` also writes them all as one markdown report (command, machine, date) to BENCH_REPORT.
BENCHES ?= startup overhead cfg_batch half_frame step_cache reuse memory
BENCH_REPORT ?= build/bench/RESULTS.md
bench: install
	$(BIN)/python benchmarks/report.py $(BENCHES) -o $(BENCH_REPORT)

# Algorithm quality on the trained toy models (under 2 minutes here).
quality: install
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(OUT) .pytest_cache build
