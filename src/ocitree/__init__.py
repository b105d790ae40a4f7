"""ocitree: ship an ostree-based OS as OCI container images."""

from ocitree.errors import UserError

__all__ = ["UserError", "__version__"]
__version__ = "0.1.0"
