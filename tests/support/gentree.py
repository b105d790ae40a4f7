"""A deterministic generator of OS-like trees, the test data of tests and benchmarks.

The tree looks like the root of an ostree commit (``usr/`` holds everything, config lives
in ``usr/etc``, toplevel compatibility symlinks, a kernel and initramfs under
``usr/lib/modules/<kver>/``). Its components are "packages" ``pkg-000``… whose sizes are
drawn from the Fedora CoreOS size distribution in
``tests/fixtures/fedora-coreos-contentmeta.json.gz`` and scaled to the requested total.

Components are recorded the way the chunker reads them: every regular file of a
component carries the xattr ``user.component=<name>``. Linux refuses ``user.*`` xattrs on
symlinks, so a symlink is claimed by path instead: it lives beside the files of its
component, names it (``usr/lib64/libpkg-012.so.1``) and points at one of its files.
Unpackaged content (``usr/lib/ocitree-unpackaged/``, ``usr/share/misc/``, ``os-release``,
``passwd``/``group``, the initramfs) has no component; the kernel's files belong to
``kernel``.

Everything is derived from ``seed``: the same arguments give byte-identical trees (file
contents, modes, ownership when run as root, xattrs). ``version=N`` for N ≥ 2 applies N-1
rounds of updates to v1: in round v a set of about ``changed * components``
components has most of its files rewritten, one file deleted and one added, and
``VERSION_ID`` in os-release becomes ``v``; every other file stays byte-identical.

Run as a script: ``python tests/support/gentree.py DEST --size 100M --components 60``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

if __name__ == "__main__" and not __package__:
    # Run as a script: make the package importable without installing it.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from ocitree.run import run

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fedora-coreos-contentmeta.json.gz"
KVER = "6.1.0-ocitree"
KERNEL_COMPONENT = "kernel"
COMPONENT_XATTR = "user.component"
TEST_XATTR = "user.test"

# rpm-ostree's entries for content that changes in every build; modelled separately.
_ALWAYS_CHANGES = 4294967295
_BLOCK = 128 * 1024
_POOL_SIZE = 1024 * 1024
_MAX_SMALL_FILES = 1500
_SMALL_MAX = 128 * 1024

Kind = Literal["text", "binary", "mixed"]


@dataclass(frozen=True)
class TreeInfo:
    """What :func:`generate_tree` made.

    ``total_bytes`` counts each regular file once (hardlinks share bytes);
    ``file_count`` counts every non-directory entry (each hardlink name, each symlink);
    ``components`` maps a component to the bytes of its regular files (``kernel``
    included, unpackaged content not); ``changed_components`` are the components the
    last update round changed (empty for version 1).
    """

    path: Path
    total_bytes: int
    file_count: int
    components: Mapping[str, int]
    changed_components: tuple[str, ...]
    kver: str


@dataclass
class _File:
    path: str
    kind: Kind
    size: int
    mode: int
    component: str | None
    rev: int = 1
    extra_xattrs: tuple[tuple[str, bytes], ...] = ()

    def xattrs(self) -> list[tuple[str, bytes]]:
        attrs = list(self.extra_xattrs)
        if self.component is not None:
            attrs.append((COMPONENT_XATTR, self.component.encode()))
        return sorted(attrs)


@dataclass
class _Component:
    name: str
    files: list[_File] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)  # path -> target
    hardlinks: dict[str, str] = field(default_factory=dict)  # path -> existing file path
    next_small: int = 0


# Directories and their modes; everything else is 0755.
_DIR_MODES = {"proc": 0o555, "sys": 0o555, "tmp": 0o1777}
_TOP_DIRS = ("boot", "dev", "proc", "run", "sys", "sysroot", "tmp", "var")
_TOP_SYMLINKS = {
    "bin": "usr/bin",
    "sbin": "usr/sbin",
    "lib": "usr/lib",
    "lib64": "usr/lib64",
    "ostree": "sysroot/ostree",
    "home": "var/home",
    "root": "var/roothome",
    "opt": "var/opt",
    "srv": "var/srv",
    "mnt": "var/mnt",
    "media": "run/media",
    "usr/local": "../var/usrlocal",
    "usr/etc/os-release": "../lib/os-release",
}
_USR_DIRS = (
    "usr/bin",
    "usr/sbin",
    "usr/lib",
    "usr/lib64",
    "usr/libexec",
    "usr/include",
    "usr/etc",
    "usr/share",
    "usr/share/doc",
    "usr/share/misc",
)


def component_sizes(count: int, total: int, seed: int) -> list[int]:
    """``count`` sizes sampled from the FCOS package size distribution, summing to ≈ total."""
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        entries = json.load(f)
    pool = sorted(int(e["size"]) for e in entries if e["change_frequency"] != _ALWAYS_CHANGES)
    rng = random.Random(f"{seed}:sizes")
    drawn = rng.sample(pool, count) if count <= len(pool) else rng.choices(pool, k=count)
    scale = total / sum(drawn)
    return [max(512, round(s * scale)) for s in drawn]


def _text_pool(seed: int) -> bytes:
    """About 1 MiB of word text and config-like lines: compresses like real text."""
    rng = random.Random(f"{seed}:text")
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = [
        "".join(rng.choices(letters, weights=range(26, 0, -1), k=rng.randint(2, 10)))
        for _ in range(3000)
    ]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    cum = [0.0] * len(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        cum[i] = acc
    lines: list[str] = []
    size = 0
    while size < _POOL_SIZE:
        if rng.random() < 0.2:
            key, value = rng.choices(vocab, cum_weights=cum, k=2)
            line = f"{key}_{rng.randint(0, 99)} = {value}"
        else:
            line = " ".join(rng.choices(vocab, cum_weights=cum, k=rng.randint(4, 14)))
        lines.append(line)
        size += len(line) + 1
    return ("\n".join(lines) + "\n").encode()[:_POOL_SIZE]


def _text(pool: bytes, rng: random.Random, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        off = rng.randrange(len(pool))
        out += pool[off : off + n - len(out)]
    return bytes(out)


def _content(f: _File, seed: int, pool: bytes) -> Iterator[bytes]:
    """The bytes of ``f``: a function of seed, path, revision, kind and size only."""
    rng = random.Random(f"{seed}:{f.path}:{f.rev}")
    left = f.size
    while left > 0:
        n = min(left, _BLOCK)
        if f.kind == "text" or (f.kind == "mixed" and rng.random() < 0.5):
            yield _text(pool, rng, n)
        else:
            yield rng.randbytes(n)
        left -= n


def _small_size(rng: random.Random) -> int:
    return max(1, min(_SMALL_MAX, int(rng.lognormvariate(8.5, 1.3))))


def _add_small(comp: _Component, rng: random.Random, size: int, rev: int) -> None:
    i = comp.next_small
    comp.next_small += 1
    kind: Kind = "text" if rng.random() < 0.5 else "binary"
    ext = "txt" if kind == "text" else "dat"
    path = f"usr/share/{comp.name}/d{i // 64:02d}/f{i:04d}.{ext}"
    comp.files.append(_File(path, kind, size, 0o644, comp.name, rev))


def _plan_component(name: str, budget: int, seed: int) -> _Component:
    """Files of one component: a few fixed ones, many small ones, a few large ones."""
    rng = random.Random(f"{seed}:{name}:layout")
    comp = _Component(name)
    tag = name.encode()
    conf = _File(
        f"usr/etc/{name}/{name}.conf",
        "text",
        max(1, min(rng.randint(64, 1024), budget // 16)),
        0o644,
        name,
        extra_xattrs=((TEST_XATTR, b"config:" + tag),),
    )
    readme = _File(
        f"usr/share/doc/{name}/README",
        "text",
        max(1, min(rng.randint(256, 4096), budget // 16)),
        0o644,
        name,
        extra_xattrs=((TEST_XATTR, b"doc:" + tag),),
    )
    empty = _File(f"usr/share/{name}/empty", "binary", 0, 0o644, name)
    comp.files += [conf, readme, empty]
    used = conf.size + readme.size

    small_budget = int((budget - used) * rng.uniform(0.15, 0.3))
    small_used = 0
    while comp.next_small < 2 or (small_used < small_budget and comp.next_small < _MAX_SMALL_FILES):
        size = min(_small_size(rng), max(1, small_budget - small_used))
        _add_small(comp, rng, size, 1)
        small_used += size
    used += small_used

    rest = max(0, budget - used)
    large = [
        (f"usr/bin/{name}", 0o755),
        (f"usr/lib64/lib{name}.so.1.0.0", 0o755),
    ]
    if rest > 4 * 1024 * 1024:
        large += [(f"usr/lib/{name}/{name}-{j}.pak", 0o644) for j in range(rng.randint(1, 2))]
    weights = [rng.random() + 0.2 for _ in large]
    for (path, mode), w in zip(large, weights, strict=True):
        size = max(1, int(rest * w / sum(weights)))
        comp.files.append(_File(path, "mixed", size, mode, name))

    comp.symlinks[f"usr/lib64/lib{name}.so.1"] = f"lib{name}.so.1.0.0"
    comp.symlinks[f"usr/lib64/lib{name}.so"] = f"lib{name}.so.1"
    comp.hardlinks[f"usr/libexec/{name}/{name}"] = f"usr/bin/{name}"
    return comp


def _update_component(comp: _Component, seed: int, version: int) -> None:
    """One update round: rewrite most files, delete one small file, add one."""
    rng = random.Random(f"{seed}:{comp.name}:update:{version}")
    smalls = [f for f in comp.files if f.path.startswith(f"usr/share/{comp.name}/d")]
    doomed = rng.choice(smalls)
    comp.files.remove(doomed)
    candidates = [f for f in comp.files if f.size > 0]
    for f in rng.sample(candidates, max(1, round(len(candidates) * 0.8))):
        f.rev = version
        f.size = max(1, round(f.size * rng.uniform(0.9, 1.1)))
    _add_small(comp, rng, _small_size(rng), version)


def _os_release(version: int) -> str:
    return (
        'NAME="ocitree sample"\n'
        "ID=ocitree-sample\n"
        f"VERSION_ID={version}\n"
        f'VERSION="{version} (sample)"\n'
        f'PRETTY_NAME="ocitree sample {version}"\n'
    )


def _fixed_files(size: int, seed: int, version: int) -> tuple[list[_File], dict[str, bytes]]:
    """Kernel, initramfs and unpackaged content; returns planned files and literal ones."""
    rng = random.Random(f"{seed}:fixed")
    mod = f"usr/lib/modules/{KVER}"
    files = [
        _File(f"{mod}/vmlinuz", "binary", max(64 * 1024, size // 80), 0o755, KERNEL_COMPONENT),
        _File(f"{mod}/config", "text", 64 * 1024, 0o644, KERNEL_COMPONENT),
        _File(f"{mod}/initramfs.img", "binary", max(64 * 1024, size // 20), 0o644, None),
        _File("usr/share/misc/magic", "text", max(1024, size // 400), 0o644, None),
    ]
    unpackaged = max(16 * 1024, size // 50)
    for j in range(4):
        kind: Kind = "mixed" if j % 2 else "text"
        part = max(1, int(unpackaged * rng.uniform(0.1, 0.4)))
        files.append(_File(f"usr/lib/ocitree-unpackaged/data-{j}", kind, part, 0o644, None))
    literal = {
        "usr/lib/os-release": _os_release(version).encode(),
        "usr/etc/passwd": b"root:x:0:0:root:/root:/bin/bash\n",
        "usr/etc/group": b"root:x:0:\nwheel:x:10:\n",
    }
    return files, literal


def _plan(
    size: int, components: int, seed: int, version: int, changed: float
) -> tuple[list[_Component], list[_File], dict[str, bytes], tuple[str, ...]]:
    fixed, literal = _fixed_files(size, seed, version)
    fixed_bytes = sum(f.size for f in fixed) + sum(len(b) for b in literal.values())
    budget = max(size - fixed_bytes, components * 1024)
    names = [f"pkg-{i:03d}" for i in range(components)]
    sizes = component_sizes(components, budget, seed)
    comps = [_plan_component(n, s, seed) for n, s in zip(names, sizes, strict=True)]
    by_name = {c.name: c for c in comps}
    changed_now: tuple[str, ...] = ()
    count = min(components, max(1, round(changed * components)))
    for v in range(2, version + 1):
        rng = random.Random(f"{seed}:changes:{v}")
        changed_now = tuple(sorted(rng.sample(names, count)))
        for name in changed_now:
            _update_component(by_name[name], seed, v)
    return comps, fixed, literal, changed_now


def _write_file(path: Path, chunks: Iterable[bytes], f: _File) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fchmod(fd, f.mode)
        if os.geteuid() == 0:
            os.fchown(fd, 0, 0)
        for key, value in f.xattrs():
            os.setxattr(fd, key, value)
    finally:
        os.close(fd)


def _symlink(root: Path, path: str, target: str) -> None:
    os.symlink(target, root / path)
    if os.geteuid() == 0:
        os.lchown(root / path, 0, 0)


def generate_tree(
    dest: Path,
    *,
    size: int,
    components: int = 60,
    seed: int = 0,
    version: int = 1,
    changed: float = 0.05,
) -> TreeInfo:
    """Make the tree at ``dest`` (absent or empty) with about ``size`` bytes of files."""
    if size <= 0 or components <= 0 or version < 1:
        raise ValueError("size and components must be positive, version at least 1")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    comps, fixed, literal, changed_now = _plan(size, components, seed, version, changed)
    pool = _text_pool(seed)

    planned = fixed + [f for c in comps for f in c.files]
    symlinks = dict(_TOP_SYMLINKS)
    hardlinks: dict[str, str] = {}
    for c in comps:
        symlinks.update(c.symlinks)
        hardlinks.update(c.hardlinks)
    leaves = [f.path for f in planned] + list(literal) + list(symlinks) + list(hardlinks)
    dirs = set(_TOP_DIRS) | set(_USR_DIRS)
    for leaf in leaves:
        dirs.update(str(p) for p in Path(leaf).parents if str(p) != ".")

    dest.mkdir(parents=True, exist_ok=True)
    for d in sorted(dirs):
        (dest / d).mkdir()
    for f in planned:
        _write_file(dest / f.path, _content(f, seed, pool), f)
    for path, data in literal.items():
        _write_file(dest / path, [data], _File(path, "text", len(data), 0o644, None))
    for path, target in sorted(hardlinks.items()):
        os.link(dest / target, dest / path)
    for path, target in sorted(symlinks.items()):
        _symlink(dest, path, target)
    # Modes last: a 0555 directory would refuse the entries made in it.
    for d in sorted(dirs, reverse=True):
        os.chmod(dest / d, _DIR_MODES.get(d, 0o755))
        if os.geteuid() == 0:
            os.chown(dest / d, 0, 0)
    os.chmod(dest, 0o755)
    if os.geteuid() == 0:
        os.chown(dest, 0, 0)

    sizes = {c.name: sum(f.size for f in c.files) for c in comps}
    sizes[KERNEL_COMPONENT] = sum(f.size for f in fixed if f.component == KERNEL_COMPONENT)
    return TreeInfo(
        path=dest,
        total_bytes=sum(f.size for f in planned) + sum(len(b) for b in literal.values()),
        file_count=len(leaves),
        components=dict(sorted(sizes.items())),
        changed_components=changed_now,
        kver=KVER,
    )


def _tree_kver(tree: Path) -> str | None:
    kernels = sorted((tree / "usr/lib/modules").glob("*/vmlinuz"))
    return kernels[0].parent.name if len(kernels) == 1 else None


def _tree_version(tree: Path) -> str | None:
    try:
        text = (tree / "usr/lib/os-release").read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_ID":
            return value.strip('"')
    return None


def commit_tree(
    tree: Path,
    repo: Path,
    ref: str,
    *,
    mode: str = "archive",
    subject: str = "ocitree sample tree",
    version: str | None = None,
    timestamp: int = 0,
) -> str:
    """Commit ``tree`` to ``ref`` in ``repo`` (made with ``mode`` if absent); return the commit.

    ``version`` defaults to the tree's ``VERSION_ID``. A tree with one kernel gets
    ``ostree.bootable=true`` and ``ostree.linux=<kver>``. Committing to an existing ref
    makes the old commit the parent, as an update would.
    """
    if not (repo / "config").exists():
        repo.mkdir(parents=True, exist_ok=True)
        run(["ostree", "init", f"--repo={repo}", f"--mode={mode}"])
    version = version if version is not None else _tree_version(tree)
    argv = [
        "ostree",
        "commit",
        f"--repo={repo}",
        f"--branch={ref}",
        f"--tree=dir={tree}",
        f"--subject={subject}",
        f"--timestamp=@{timestamp}",
        "--fsync=false",
    ]
    if version is not None:
        argv.append(f"--add-metadata-string=version={version}")
    kver = _tree_kver(tree)
    if kver is not None:
        argv += [
            "--add-metadata=ostree.bootable=true",
            f"--add-metadata-string=ostree.linux={kver}",
        ]
    run(argv)
    out = run(["ostree", "rev-parse", f"--repo={repo}", ref]).stdout
    return out.decode().strip()


def parse_size(text: str) -> int:
    """``100M``, ``1G``, ``512K`` or plain bytes (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--size", type=parse_size, default=parse_size("100M"))
    parser.add_argument("--components", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--changed", type=float, default=0.05)
    parser.add_argument("--repo", type=Path, help="also commit the tree to this ostree repo")
    parser.add_argument("--ref", default="ocitree/sample", help="ref for --repo")
    parser.add_argument("--mode", default="archive", help="mode of a new --repo")
    args = parser.parse_args(argv)
    info = generate_tree(
        args.dest,
        size=args.size,
        components=args.components,
        seed=args.seed,
        version=args.version,
        changed=args.changed,
    )
    report: dict[str, object] = {
        "path": str(info.path),
        "total_bytes": info.total_bytes,
        "file_count": info.file_count,
        "components": len(info.components),
        "changed_components": list(info.changed_components),
        "kver": info.kver,
    }
    if args.repo is not None:
        report["commit"] = commit_tree(info.path, args.repo, args.ref, mode=args.mode)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
