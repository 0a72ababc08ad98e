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

# Trains fm-digits-quick (flow matching) on the shipped digits (under 3 minutes on 2 idle CPU cores) and writes a sample grid.
demo: $(STAMP)
	$(BIN)/zoo train fm-digits-quick --output runs/demo

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver (web page test)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver; }

# The fast tests in two pytest workers (pytest-xdist, one torch thread each); then the slow ones in
# two workers a file at a time (--dist loadfile): each worker's session has its own Ray cluster and
# S3 server, and a file's tests share its module fixtures (a Serve app, reference runs); a trained
# fixture both need is trained once (a file lock in tests/train_cache.py). Much of a slow test is
# waiting (process start-up, Serve's replicas, polling), which the other worker fills: 13:00 ->
# 10:31 for the slow part on 2 idle cores. (--dist loadgroup would group tests across files, but
# pytest-xdist 3.8 cannot rename pytest 9's node ids, so its groups are ignored.)
PYTEST  := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2
FAST    := $(PYTEST) -m "not slow and not quality"
test: $(STAMP) browser
	$(FAST)
	$(PYTEST) --dist loadfile -m "slow and not quality"

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
