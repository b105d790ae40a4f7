# ocitree: `make demo` runs the workflow end to end, `make test` runs the tests.
# Both install what they need on a fresh Debian 12 machine (as root).

VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := ostree gir1.2-ostree-1.0 python3-gi python3-venv python3-rpm skopeo \
	docker-registry umoci buildah podman runc pigz rpm createrepo-c apache2-utils openssl \
	golang-github-containers-common fuse-overlayfs uidmap attr time busybox-static gnupg bubblewrap debootstrap \
	xorriso mtools dosfstools isolinux syslinux-common isomd5sum
STAMP_APT := $(VENV)/.apt-done
STAMP_VENV := $(VENV)/.venv-done

.PHONY: deps demo test lint bench clean

deps: $(STAMP_VENV)

$(STAMP_APT):
	@mkdir -p $(VENV)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing: $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

$(STAMP_VENV): $(STAMP_APT) pyproject.toml
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

lint: deps
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

test: deps
	$(MAKE) lint
	$(PY) -m pytest -n 2 --dist loadgroup -q

demo: deps
	$(PY) examples/demo.py

bench: deps
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
