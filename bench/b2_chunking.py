"""B2: expected bytes a device downloads per weekly update, and plan stability.

The reference packer (rpm-ostree/bootc, Rust) is not available here, so its figure on the
same data is the constant from docs BENCHMARKS.md, not a run side by side.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from common import FIXTURES, VENV_BIN, figure, info, timed

from ocitree.container.chunking import (
    Chunk,
    Component,
    expected_download,
    ideal_download,
    load_contentmeta,
    plan_chunks,
    single_layer_download,
)

CONTENTMETA = FIXTURES / "fedora-coreos-contentmeta.json.gz"
MAX_LAYERS = 64
REFERENCE_MB = 1060.4  # BENCHMARKS.md B2: the reference packer, 64 layers
DOC_IDEAL_MB = 946.5
DOC_SINGLE_MB = 1351.2
E_TARGET = 0.95
STABILITY_TARGET = 4
MB = 1e6


def changed_layers(old: Sequence[Chunk], new: Sequence[Chunk]) -> int:
    """Chunk layers of ``new`` whose component set is not that of any layer of ``old``."""
    before = {frozenset(c.components) for c in old}
    return sum(1 for c in new if frozenset(c.components) not in before)


def update_scenario(components: Sequence[Component], seed: int = 0) -> list[Component]:
    """10 components change size by ±20 %, 3 new ones appear (deterministic)."""
    rng = random.Random(seed)
    out = list(components)
    for idx in rng.sample(range(len(out)), 10):
        factor = rng.choice((0.8, 1.2))
        out[idx] = replace(out[idx], size=round(out[idx].size * factor))
    for k in range(3):
        model = rng.choice(components)
        out.append(Component(f"bench-new-{k}", model.size, model.change_frequency))
    return out


def _plan_json_figures(repo: Path, ref: str) -> None:
    t = timed([VENV_BIN / "ocitree", "plan", "--repo", repo, ref, "--json"])
    d = json.loads(t.stdout)
    info(
        f"generated tree ({d['components']} components, all monthly but initramfs and "
        f"unpackaged): E {d['expected_download'] / MB:.1f} MB, ideal "
        f"{d['ideal_download'] / MB:.1f} MB, single layer "
        f"{d['single_layer_download'] / MB:.1f} MB, {len(d['layers'])} chunk layers "
        f"(ocitree plan: {t.seconds:.1f} s)"
    )


def bench(tree_repo: tuple[Path, str] | None = None) -> None:
    print(f"B2 chunking ({CONTENTMETA.name}, max {MAX_LAYERS} layers)", flush=True)
    comps = load_contentmeta(CONTENTMETA)
    chunks = plan_chunks(comps, max_layers=MAX_LAYERS)
    e = expected_download(chunks, comps)
    ideal = ideal_download(comps)
    single = single_layer_download(comps)
    figure(
        "B2 E vs reference packer",
        f"{e / MB / REFERENCE_MB:.3f}x",
        f"target <= {E_TARGET}; reference {REFERENCE_MB} MB is the figure from BENCHMARKS.md, "
        "its Rust packer is not available to run here",
    )
    figure(
        "B2 expected download per update",
        f"{e / MB:.1f} MB",
        f"target <= {E_TARGET * REFERENCE_MB:.0f} MB; ideal {ideal / MB:.1f} MB, "
        f"single layer {single / MB:.1f} MB",
    )
    info(
        f"E = {e / ideal:.3f}x ideal; BENCHMARKS.md has ideal {DOC_IDEAL_MB} MB, "
        f"single layer {DOC_SINGLE_MB} MB; "
        f"{sum(1 for c in chunks if c.components)} non-empty chunk layers + 1 reserved, "
        f"{len(comps)} components"
    )

    updated = update_scenario(comps)
    previous = [list(c.components) for c in chunks]
    stable = plan_chunks(updated, max_layers=MAX_LAYERS, previous=previous)
    fresh = plan_chunks(updated, max_layers=MAX_LAYERS)
    n_changed = changed_layers(chunks, stable)
    figure(
        "B2 stability",
        f"{n_changed} chunk layers changed component set",
        f"target <= {STABILITY_TARGET}",
    )
    e_stable = expected_download(stable, updated)
    e_fresh = expected_download(fresh, updated)
    info(
        f"update scenario (10 sizes ±20 %, 3 new, seed 0): E with previous "
        f"{e_stable / MB:.1f} MB, fresh plan {e_fresh / MB:.1f} MB changing "
        f"{changed_layers(chunks, fresh)} layers"
    )
    if tree_repo is not None:
        _plan_json_figures(*tree_repo)
