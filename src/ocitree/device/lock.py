"""One operation at a time per sysroot: libostree's sysroot lock.

This is the lock ``ostree admin`` commands and rpm-ostree take (an exclusive lock on
``SYSROOT/ostree/lock`` through ``ostree_sysroot_lock()``/``try_lock()``), so ocitree,
ostree and rpm-ostree never write the same sysroot at once. The lock belongs to an open
file description: two ``OSTree.Sysroot`` objects conflict even within one process.

:meth:`Device.deploy <ocitree.device.sysroot.Device.deploy>` and
:meth:`~ocitree.device.sysroot.Device.rollback` take it themselves. Holding it around a
longer operation is fine: on the same :class:`~ocitree.device.sysroot.Device` it is
re-entrant (counted per ``OSTree.Sysroot`` object).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocitree.errors import UserError
from ocitree.ostree.repo import GLib

if TYPE_CHECKING:
    from ocitree.device.sysroot import Device

_POLL = 0.1
_held: dict[int, tuple[Any, int]] = {}  # id(OSTree.Sysroot) -> (the object, depth)
_guard = threading.Lock()


def _busy(path: Path) -> UserError:
    return UserError(
        f"another operation is running on {path}",
        hint="wait for it to finish (ostree admin, rpm-ostree and ocitree all take the "
        f"sysroot lock {path / 'ostree' / 'lock'}) and try again",
    )


def _try_lock(sysroot: Any, path: Path) -> bool:
    try:
        _ok, acquired = sysroot.try_lock()
    except GLib.Error as e:
        raise UserError(f"cannot lock the sysroot {path}: {e.message}") from e
    return bool(acquired)


@contextmanager
def sysroot_lock(
    device_or_path: Device | Path | str, *, wait: bool = True, timeout: float | None = 30
) -> Iterator[None]:
    """Hold the ostree sysroot lock for the ``with`` block.

    With ``wait`` the lock is polled for up to ``timeout`` seconds (``None``: no limit);
    without it, or when the time runs out, a held lock raises a UserError.
    """
    if isinstance(device_or_path, str | os.PathLike):
        from ocitree.device.sysroot import open_sysroot

        path = Path(device_or_path)
        sysroot = open_sysroot(path)
    else:
        path = device_or_path.path
        sysroot = device_or_path.sysroot

    key = id(sysroot)
    with _guard:
        if key in _held:
            _held[key] = (sysroot, _held[key][1] + 1)
            reentered = True
        else:
            reentered = False
    if not reentered:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not _try_lock(sysroot, path):
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise _busy(path)
            time.sleep(_POLL)
        with _guard:
            _held[key] = (sysroot, 1)
    try:
        yield
    finally:
        with _guard:
            obj, depth = _held[key]
            if depth > 1:
                _held[key] = (obj, depth - 1)
            else:
                del _held[key]
                sysroot.unlock()
