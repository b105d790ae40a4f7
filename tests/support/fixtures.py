"""Pytest fixtures for a real local registry; ``tests/conftest.py`` imports them.

``registry`` is plain HTTP without authentication (clients need ``--tls-verify=false``);
``secure_registry`` serves TLS with a self-signed certificate and requires the
credentials in its ``authfile``. Each test gets its own registry: starting one takes
well under a second.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from support.registry import Registry, start_registry


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry without authentication on 127.0.0.1."""
    _require("docker-registry")
    with start_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def secure_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A TLS registry (self-signed certificate) with htpasswd authentication on 127.0.0.1."""
    _require("docker-registry", "openssl", "htpasswd")
    with start_registry(tmp_path_factory.mktemp("secure-registry"), tls=True, auth=True) as reg:
        yield reg
