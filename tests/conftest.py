"""Shared test setup: the real-tool fixtures live in tests/support."""

pytest_plugins = ["support.fixtures", "support.distro"]
