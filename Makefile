# cotap_mm developer entry points. `make test` is the command CI runs (.ci/run).
#   make demo    set up .venv (first run: ~5 min, ~15 min more if mmcv must be built), then the
#                demo: synthetic scenes -> init -> CoTAP -> mmseg linear probe (tools/demo.py,
#                work_dirs/demo/results.json; ~15 min on 2 CPU cores)
#   make smoke   one CoTAP-style training step of a tiny ViT (seconds)
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

smoke: setup
	$(PY) tools/smoke_demo.py configs/smoke/smoke_tiny.py

clean:
	rm -rf work_dirs .pytest_cache .hypothesis build dist cotap_mm.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .setup_logs
