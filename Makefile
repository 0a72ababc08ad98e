# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv and install everything they need (torch's registry build and its paired
# torchvision, Ray, the S3 and diffusers extras, test tools) pinned by constraints.txt.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
EXTRAS  := ray,s3,hf,lpips,dev

# The web page test drives Debian's chromium through its chromedriver (never a downloaded browser).
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast test-quality install browser bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# Trains fm-digits-quick (flow matching) on the shipped digits (about 2.5 minutes on 2 idle CPU cores) and writes a sample grid.
demo: $(STAMP)
	$(BIN)/zoo train fm-digits-quick --output runs/demo

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver (web page test)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver; }

# Three kinds of test (pyproject.toml's markers). The fast ones: two pytest workers (pytest-xdist,
# one torch thread each). `heavy`: seconds of CPU each in one process, nothing shared (1000-step
# chains, Inception and diffusers round trips): with the fast ones in `make test`, left out of
# `make test-fast`. `slow`: one process, in file order, since they share the session's Ray
# cluster, S3 server and trained runs.
# Two slow workers a file at a time (--dist loadfile) were measured too: the slow part is CPU-bound
# while busy (Ray Train runs are process start-ups and imports), so each test ran about 2x slower
# beside the other worker (583 s for what takes about 630 s alone), and a Serve readiness probe
# timed out under that load. (xdist's --dist loadgroup would group tests across files, but
# pytest-xdist 3.8 cannot rename pytest 9's node ids, so its groups are ignored.)
XDIST   := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2
FAST    := $(XDIST) -m "not slow and not heavy and not quality"
# The slow part collects only the files that mark a test slow: 11 s instead of 19 s of collection
# (the imports of every test module) on its critical path (2026-12-02).
SLOW_FILES = $$(grep -l 'mark\.slow' tests/test_*.py)
# `make test` runs the fast and heavy tests at nice 19 beside the slow ones (their output is
# printed when both parts have ended): the slow part waits on process start-ups, health checks and
# autoscaling delays, so about a quarter of the two cores is idle while it runs (vmstat,
# 2026-12-02), and a niced process gets that idle time but only about 1.5% of a core the slow part
# wants. The niced part keeps out of .pytest_cache (two sessions would write it at once). Ctrl-C
# reaches both parts; a signal sent to the recipe's shell alone ends the niced part through the trap.
test: $(STAMP) browser
	@rm -f .test-fast.log .test-fast.log.rc; \
	echo "== the slow tests; the fast and heavy ones run beside them at nice 19 (their output follows)"; \
	{ nice -n 19 env $(XDIST) -m "not slow and not quality" -p no:cacheprovider >.test-fast.log 2>&1; echo $$? >.test-fast.log.rc; } & \
	fast_job=$$!; trap 'pkill -TERM -P $$fast_job; exit 130' INT TERM; \
	$(BIN)/python -m pytest -q -m "slow and not quality" $(SLOW_FILES); slow=$$?; wait; \
	echo "== the fast and heavy tests (at nice 19, beside the slow ones above)"; cat .test-fast.log; \
	fast=$$(cat .test-fast.log.rc); rm -f .test-fast.log.rc; \
	[ "$$slow" = 0 ] && [ "$$fast" = 0 ]

test-fast: $(STAMP)
	$(FAST)

# the CPU-scale quality orderings of the few-step and text-to-image families: each trains its
# catalog models (about an hour on 2 cores), too long for make test's budget
test-quality: $(STAMP)
	$(BIN)/python -m pytest -q -m quality

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
