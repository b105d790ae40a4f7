"""``ocitree compose``: blueprint → installed tree → ostree commit (and edge-commit tarball)."""
