"""The device side: deployments of an ostree sysroot (status, deploy, rollback, lock)."""

from ocitree.device.lock import sysroot_lock
from ocitree.device.sysroot import DeploymentInfo, Device

__all__ = ["DeploymentInfo", "Device", "sysroot_lock"]
