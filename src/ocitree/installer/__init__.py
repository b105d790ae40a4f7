"""The installer: kickstarts and installer ISOs that carry them."""
