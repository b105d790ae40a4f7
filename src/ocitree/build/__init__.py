"""``ocitree build``: derived OS images from a Containerfile."""
