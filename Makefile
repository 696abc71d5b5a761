# cotap_mm developer entry points. `make test` is the command CI runs (.ci/run).
#   make demo    set up .venv (first run: ~5 min, ~15 min more if mmcv must be built), then the
#                demo: synthetic scenes -> init -> CoTAP -> mmseg linear probe (tools/demo.py,
#                work_dirs/demo/results.json; ~16 min on 2 CPU cores once the init
#                is cached, ~30 min the first time)
#   make smoke   two iterations of the real CoTAP training (tools/train.py) on a few synthetic
#                scenes and their kNN files (configs/smoke/cotap_tiny_synthetic.py; seconds)
#   make test    set up .venv + run the test suite
#   make clean   remove caches and work_dirs; `make distclean` also removes .venv
VENV ?= $(or $(COTAP_MM_VENV),.venv)
PY := $(VENV)/bin/python

.PHONY: setup test demo smoke clean distclean

setup:
	bash tools/setup_env.sh

# pytest exit code 5 means "no tests collected": a failure here, with a message saying so
test: setup
	@rc=0; $(PY) -m pytest -q tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: ERROR: pytest collected no tests (exit code 5)" >&2; fi; \
	exit $$rc

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) tools/demo.py

SMOKE := work_dirs/smoke
smoke: setup
	$(PY) tools/make_synthetic_scenes.py $(SMOKE)/data --size 64 --num-coco 8 --num-imagenet 8 \
		--num-seg-train 2 --num-seg-val 2 --force
	$(PY) tools/precompute_knn.py $(SMOKE)/data/coco/train2017 $(SMOKE)/data/nns/coco.npz \
		--arch tiny --patch-size 8 --k 5 --image-size 64 --num-workers 0
	$(PY) tools/precompute_knn.py $(SMOKE)/data/imagenet/train $(SMOKE)/data/nns/imagenet.npz \
		--arch tiny --patch-size 8 --k 5 --image-size 64 --num-workers 0
	$(PY) tools/train.py configs/smoke/cotap_tiny_synthetic.py --work-dir $(SMOKE)/train

clean:
	rm -rf work_dirs .pytest_cache .hypothesis build dist cotap_mm.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .setup_logs
