"""Real image signatures for tests: a throwaway GPG key, a policy that demands it, skopeo.

``make_signing_setup()`` generates an RSA key without passphrase in a private
``GNUPGHOME`` under a work directory (never the user's keyring), exports its public key
and writes the two configuration files skopeo needs to sign and to verify:

* a ``containers-policy.json`` that rejects everything by default, requires a signature
  by that key for ``docker://`` images of the registry host and accepts local layouts
  (``oci:``, ``dir:``, archives) as they are, so that pushing from one is allowed;
* a ``registries.d`` directory whose YAML sends simple-signing signatures of that host
  to a local "lookaside" directory (``file://``): ``docker-registry`` cannot store them.

``sign_and_push()`` copies an image to the registry with ``skopeo copy --sign-by``;
verifying is any skopeo command run with ``--policy`` and ``--registries.d`` (see
:meth:`SigningSetup.skopeo_args`). Call :func:`stop_agent` (or use :func:`signing`)
when done: signing starts a ``gpg-agent`` for the private ``GNUPGHOME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ocitree.run import run

KEY_EMAIL = "test@ocitree.invalid"
# gpg-agent puts its sockets in GNUPGHOME when /run/user/UID does not exist; a socket
# path must stay below 108 bytes (sun_path), so long pytest tmp paths use a short home.
_MAX_HOME = 70
_SHORT_PREFIX = "ocitree-gpg-"
# Local sources one pushes from: the policy applies to the source image of a copy.
_LOCAL_TRANSPORTS = ("oci", "oci-archive", "dir", "docker-archive")


@dataclass(frozen=True)
class SigningSetup:
    """A signing key and the skopeo configuration that trusts only that key for one host."""

    gnupg_home: Path  # a private GNUPGHOME (never the user's)
    fingerprint: str  # of the generated key (no passphrase)
    pubkey: Path  # armored public key file
    policy: Path  # containers-policy.json requiring the key for docker://HOST
    registries_d: Path  # registries.d with the lookaside (signature storage) for HOST
    sigstore_dir: Path  # the lookaside directory itself
    registry_host: str  # "127.0.0.1:PORT"
    env: dict[str, str]  # extra environment for run()/spawn(): GNUPGHOME

    def skopeo_args(self) -> list[str]:
        """Global skopeo flags that enforce the policy: ``skopeo [these] copy ...``."""
        return ["--policy", str(self.policy), "--registries.d", str(self.registries_d)]


def _gnupg_home(workdir: Path) -> Path:
    home = workdir / "gnupg"
    if len(os.fsencode(home)) > _MAX_HOME:
        home = Path(tempfile.mkdtemp(prefix=_SHORT_PREFIX))
        (workdir / "gnupg").symlink_to(home)
    home.mkdir(mode=0o700, exist_ok=True)
    home.chmod(0o700)
    return home


def _fingerprint(env: dict[str, str], uid: str) -> str:
    out = run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys", "--", uid], env=env
    ).stdout.decode()
    for line in out.splitlines():
        fields = line.split(":")
        if fields[0] == "fpr":
            return fields[9]
    raise RuntimeError(f"gpg listed no fingerprint for {uid!r}:\n{out}")


def write_policy(path: Path, registry_host: str, pubkey: Path) -> None:
    """A policy: reject by default, ``docker://HOST`` signed by ``pubkey``, local as is."""
    accept = [{"type": "insecureAcceptAnything"}]
    transports: dict[str, dict[str, object]] = {t: {"": accept} for t in _LOCAL_TRANSPORTS}
    transports["docker"] = {
        registry_host: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(pubkey)}]
    }
    policy = {"default": [{"type": "reject"}], "transports": transports}
    path.write_text(json.dumps(policy, indent=2) + "\n")


def write_registries_d(directory: Path, registry_host: str, sigstore_dir: Path) -> None:
    """A registries.d whose lookaside for ``registry_host`` is ``sigstore_dir``."""
    directory.mkdir(parents=True, exist_ok=True)
    url = json.dumps(sigstore_dir.resolve().as_uri())  # a JSON string is a YAML scalar
    # "lookaside" is the current name, "sigstore" the older one skopeo also reads; one
    # of each pair is enough, and containers/image refuses both together.
    (directory / "ocitree-test.yaml").write_text(
        "docker:\n"
        f"  {json.dumps(registry_host)}:\n"
        f"    lookaside: {url}\n"
        f"    lookaside-staging: {url}\n"
    )


def make_signing_setup(
    workdir: Path,
    registry_host: str,
    *,
    name: str = "ocitree test",
    sigstore_dir: Path | None = None,
) -> SigningSetup:
    """Generate a key under ``workdir`` and the policy that trusts it for ``registry_host``.

    Signatures go to ``workdir/sigstore`` unless ``sigstore_dir`` names another lookaside,
    e.g. that of a second setup, so that two keys sign into the storage one policy reads
    (as with one registry's real signature storage).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    home = _gnupg_home(workdir)
    env = {"GNUPGHOME": str(home)}
    uid = f"{name} <{KEY_EMAIL}>"
    run(
        [
            "gpg",
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "rsa2048",
            "sign",
            "never",
        ],
        env=env,
    )
    fingerprint = _fingerprint(env, uid)
    pubkey = workdir / "pubkey.asc"
    pubkey.write_bytes(run(["gpg", "--batch", "--armor", "--export", fingerprint], env=env).stdout)
    if sigstore_dir is None:
        sigstore_dir = workdir / "sigstore"
    sigstore_dir.mkdir(parents=True, exist_ok=True)
    registries_d = workdir / "registries.d"
    write_registries_d(registries_d, registry_host, sigstore_dir)
    policy = workdir / "policy.json"
    write_policy(policy, registry_host, pubkey)
    return SigningSetup(
        gnupg_home=home,
        fingerprint=fingerprint,
        pubkey=pubkey,
        policy=policy,
        registries_d=registries_d,
        sigstore_dir=sigstore_dir,
        registry_host=registry_host,
        env=env,
    )


def stop_agent(setup: SigningSetup) -> None:
    """Stop the gpg-agent of this setup's GNUPGHOME (only that one), if it runs.

    A GNUPGHOME moved to a short temporary directory (see ``_gnupg_home``) is removed.
    """
    if shutil.which("gpgconf") is not None:
        run(["gpgconf", "--kill", "gpg-agent"], env=setup.env, check=False)
    home = setup.gnupg_home
    if home.parent == Path(tempfile.gettempdir()) and home.name.startswith(_SHORT_PREFIX):
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def signing(
    workdir: Path,
    registry_host: str,
    *,
    name: str = "ocitree test",
    sigstore_dir: Path | None = None,
) -> Iterator[SigningSetup]:
    """:func:`make_signing_setup`, stopping its gpg-agent on the way out."""
    setup = make_signing_setup(workdir, registry_host, name=name, sigstore_dir=sigstore_dir)
    try:
        yield setup
    finally:
        stop_agent(setup)


def sign_and_push(
    setup: SigningSetup,
    src: str,
    dest: str,
    *,
    authfile: Path | None = None,
    cert_dir: Path | None = None,
    tls_verify: bool = True,
) -> None:
    """``skopeo copy --sign-by FPR`` from ``src`` (e.g. ``oci:DIR:tag``) to ``docker://…``.

    The signature lands in the setup's lookaside directory. ``cert_dir`` holds the
    registry's CA; ``tls_verify=False`` is for a plain-HTTP registry.
    """
    argv: list[str | os.PathLike[str]] = ["skopeo", *setup.skopeo_args(), "copy", "--quiet"]
    argv += ["--sign-by", setup.fingerprint]
    if authfile is not None:
        argv += ["--dest-authfile", authfile]
    if cert_dir is not None:
        argv += ["--dest-cert-dir", cert_dir]
    if not tls_verify:
        argv.append("--dest-tls-verify=false")
    run([*argv, src, dest], env=setup.env)
