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
# path must stay below 108 bytes (sun_path), so a long work directory gets a short home.
_MAX_GNUPGHOME = 70
_SHORT_PREFIX = "ocitree-signing-"
# Local sources one pushes from: the policy applies to the source image of a copy.
_LOCAL_TRANSPORTS = ("oci", "oci-archive", "dir", "docker-archive")


@dataclass(frozen=True)
class SigningSetup:
    """A signing key and the skopeo configuration that trusts only that key for one host."""

    home: Path  # a HOME holding the three below, where gpg and skopeo look by default
    gnupg_home: Path  # a private GNUPGHOME (never the user's): HOME/.gnupg
    fingerprint: str  # of the generated key (no passphrase)
    pubkey: Path  # armored public key file
    policy: Path  # HOME/.config/containers/policy.json: the key for docker://HOST
    registries_d: Path  # HOME/.config/containers/registries.d: lookaside for HOST
    sigstore_dir: Path  # the lookaside directory itself
    registry_host: str  # "127.0.0.1:PORT"
    env: dict[str, str]  # extra environment for run()/spawn(): GNUPGHOME

    def skopeo_args(self) -> list[str]:
        """Global skopeo flags that enforce the policy: ``skopeo [these] copy ...``."""
        return ["--policy", str(self.policy), "--registries.d", str(self.registries_d)]


def _home(workdir: Path) -> Path:
    """``workdir/home``, or a short temporary directory it links to when too long for gpg."""
    home = workdir / "home"
    if len(os.fsencode(home / ".gnupg")) > _MAX_GNUPGHOME:
        home.symlink_to(tempfile.mkdtemp(prefix=_SHORT_PREFIX))
        home = home.resolve()
    else:
        home.mkdir()
    (home / ".gnupg").mkdir(mode=0o700)
    (home / ".config" / "containers").mkdir(parents=True)
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
    # "lookaside(-staging)" is what skopeo 1.9.3 documents; releases before it called
    # them "sigstore(-staging)" (still read as aliases).
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
    home = _home(workdir)
    gnupg_home = home / ".gnupg"
    containers = home / ".config" / "containers"
    env = {"GNUPGHOME": str(gnupg_home)}
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
    registries_d = containers / "registries.d"
    write_registries_d(registries_d, registry_host, sigstore_dir)
    policy = containers / "policy.json"
    write_policy(policy, registry_host, pubkey)
    return SigningSetup(
        home=home,
        gnupg_home=gnupg_home,
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

    A home moved to a short temporary directory (see ``_home``) is removed.
    """
    if shutil.which("gpgconf") is not None:
        run(["gpgconf", "--kill", "gpg-agent"], env=setup.env, check=False)
    home = setup.home
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

    The signature lands in the setup's lookaside directory. The source is not checked
    against any policy (``--insecure-policy``): a publisher may re-sign an image from
    the same registry. ``cert_dir`` holds the registry's CA; ``tls_verify=False`` is for
    a plain-HTTP registry.
    """
    argv: list[str | os.PathLike[str]] = [
        "skopeo",
        "--insecure-policy",
        "--registries.d",
        setup.registries_d,
        "copy",
        "--quiet",
    ]
    argv += ["--sign-by", setup.fingerprint]
    if authfile is not None:
        argv += ["--dest-authfile", authfile]
    if cert_dir is not None:
        argv += ["--dest-cert-dir", cert_dir]
    if not tls_verify:
        argv.append("--dest-tls-verify=false")
    run([*argv, src, dest], env=setup.env)
