"""skopeo, for every registry and transport operation (auth.json, certs.d, policy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ocitree.errors import CommandError, UserError
from ocitree.oci.reference import ImageReference, Transport
from ocitree.run import run

_SKOPEO_PACKAGE = "skopeo"


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: credentials and TLS, as skopeo takes them."""

    authfile: Path | None = None
    tls_verify: bool = True
    cert_dir: Path | None = None

    def args(self, side: str = "") -> list[str]:
        """skopeo flags; ``side`` is ``src-``/``dest-`` for copy, empty for inspect."""
        out: list[str] = []
        if self.authfile is not None:
            if not self.authfile.is_file():
                raise UserError(f"auth file {self.authfile} does not exist")
            out += [f"--{side}authfile", str(self.authfile)]
        if not self.tls_verify:
            out.append(f"--{side}tls-verify=false")
        if self.cert_dir is not None:
            out += [f"--{side}cert-dir", str(self.cert_dir)]
        return out


def explain(err: CommandError, ref: ImageReference | None = None) -> UserError:
    """Turn skopeo's stderr into one line with a hint the user can act on."""
    text = err.stderr
    lower = text.lower()
    where = f" for {ref}" if ref else ""
    host = ref.registry_host if ref else None
    if "source image rejected" in lower or "rejected by policy" in lower:
        return UserError(
            f"the signature policy refused the image{where}: {_last_line(text)}",
            hint="the image must be signed by a key the device's containers-policy.json "
            "trusts (and its registries.d must say where signatures are stored)",
        )
    if (
        "unauthorized" in lower
        or "authentication required" in lower
        or "invalid username/password" in lower
    ):
        return UserError(
            f"the registry refused the credentials{where}",
            hint="check the user and password in the auth file (--authfile, or "
            f"'skopeo login {host or 'HOST'}')",
        )
    if "x509" in lower or (
        "certificate" in lower and ("unknown authority" in lower or "not trusted" in lower)
    ):
        return UserError(
            f"the registry's TLS certificate is not trusted{where}",
            hint="pass --cert-dir DIR holding the registry's CA as ca.crt, or put it in "
            f"/etc/containers/certs.d/{host or 'HOST'}/; --tls-verify=false only for tests",
        )
    if "server gave http response to https client" in lower:
        return UserError(
            f"the registry speaks plain HTTP{where}",
            hint="pass --tls-verify=false for a registry without TLS",
        )
    if "connection refused" in lower or "no such host" in lower or "i/o timeout" in lower:
        return UserError(
            f"cannot reach the registry{where}", hint="is it running, and the address right?"
        )
    if "manifest unknown" in lower or "name unknown" in lower or "not found" in lower:
        return UserError(f"image not found{where}", hint="check the name and tag")
    if "no space left on device" in lower:
        return UserError(f"no space left on device while copying{where}")
    if "signature" in lower and (
        "reject" in lower or "not signed" in lower or "no signature" in lower
    ):
        return UserError(
            f"signature verification failed{where}: {err.message}",
            hint="check containers-policy.json and the signing key",
        )
    return UserError(f"skopeo failed{where}: {_last_line(text) or err.message}")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1]
    # skopeo prints 'time="..." level=fatal msg="..."'; keep the message.
    if 'msg="' in line:
        line = line.split('msg="', 1)[1].rstrip('"')
    return line


def copy(
    src: ImageReference,
    dest: ImageReference,
    opts: RegistryOptions,
    *,
    sign_by: str | None = None,
    extra: Sequence[str] = (),
    global_args: Sequence[str] = (),
) -> None:
    """``skopeo copy`` keeping digests (the image is byte-identical at the destination).

    ``global_args`` go before ``copy``: ``--policy``, ``--registries.d``.
    """
    argv = ["skopeo", *global_args, "copy", "--preserve-digests", "--quiet"]
    if src.transport is Transport.REGISTRY:
        argv += opts.args("src-")
    if dest.transport is Transport.REGISTRY:
        argv += opts.args("dest-")
    if sign_by:
        argv += ["--sign-by", sign_by]
    argv += [*extra, str(src), str(dest)]
    try:
        run(argv, hint="see the message above")
    except CommandError as e:
        raise explain(e, dest if dest.transport is Transport.REGISTRY else src) from e


def inspect_raw(ref: ImageReference, opts: RegistryOptions, *, config: bool = False) -> bytes:
    """The raw manifest (or with ``config`` the raw config) of an image."""
    argv = ["skopeo", "inspect", "--raw", *opts.args()]
    if config:
        argv.append("--config")
    argv.append(str(ref))
    try:
        return run(argv).stdout
    except CommandError as e:
        raise explain(e, ref) from e
