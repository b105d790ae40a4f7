"""Chunking: expected download on real Fedora CoreOS data, limits, determinism, stability."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from ocitree.container import chunking
from ocitree.container.chunking import (
    ALWAYS,
    Chunk,
    Component,
    expected_download,
    ideal_download,
    load_contentmeta,
    plan_chunks,
    single_layer_download,
)
from ocitree.errors import UserError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fedora-coreos-contentmeta.json.gz"

TARGET_E = 1007e6  # BENCHMARKS.md B2: 0.95 x the reference packer's 1060.4 MB


@pytest.fixture(scope="module")
def fcos() -> list[Component]:
    return load_contentmeta(FIXTURE)


@pytest.fixture(scope="module")
def fcos_plan(fcos: list[Component]) -> list[Chunk]:
    return plan_chunks(fcos)


def assert_valid(chunks: Sequence[Chunk], components: Sequence[Component], max_layers: int) -> None:
    """Every component in exactly one chunk, sizes right, limit kept, one reserved chunk."""
    assert len(chunks) <= max_layers
    names = [name for chunk in chunks for name in chunk.components]
    assert sorted(names) == sorted(c.name for c in components)
    assert len(names) == len(set(names))
    sizes = {c.name: c.size for c in components}
    for chunk in chunks:
        assert list(chunk.components) == sorted(chunk.components)
        assert chunk.size == sum(sizes[name] for name in chunk.components)
    assert sum(1 for chunk in chunks if not chunk.components) <= 1


def changed_layers(before: Sequence[Chunk], after: Sequence[Chunk]) -> int:
    """Chunk layers of ``after`` whose component set no layer of ``before`` had.

    Layers are content-addressed: a layer with the same content at another position in
    the manifest is not downloaded again.
    """
    old_sets = {frozenset(chunk.components) for chunk in before}
    return sum(1 for chunk in after if frozenset(chunk.components) not in old_sets)


# --- the fixture and the model --------------------------------------------------------


def test_fixture_loads_as_documented(fcos: list[Component]) -> None:
    assert len(fcos) == 396
    assert sum(c.size for c in fcos) == 1_351_235_724
    assert sorted(c.name for c in fcos if c.change_frequency == ALWAYS) == [
        "initramfs",
        "rpmostree-unpackaged-content",
    ]


def test_reference_figures(fcos: list[Component]) -> None:
    assert ideal_download(fcos) == pytest.approx(946.47e6, abs=0.05e6)
    assert single_layer_download(fcos) == pytest.approx(1351.2357e6, abs=1e3)


def test_probability() -> None:
    assert Component("a", 1, ALWAYS).probability == 1.0
    assert Component("a", 1, 0).probability == 0.0
    assert Component("a", 1, 26).probability == 0.5
    assert Component("a", 1, 389).probability == 1.0


# --- fresh plan on FCOS ---------------------------------------------------------------


def test_fcos_expected_download_meets_target(fcos: list[Component], fcos_plan: list[Chunk]) -> None:
    e = expected_download(fcos_plan, fcos)
    assert e <= TARGET_E
    assert e >= ideal_download(fcos)


def test_fcos_layer_count_and_reserved_chunk(fcos_plan: list[Chunk]) -> None:
    assert len(fcos_plan) <= 64
    empty = [chunk for chunk in fcos_plan if not chunk.components]
    assert empty == [Chunk((), 0)]
    assert fcos_plan[-1] == Chunk((), 0)


def test_fcos_every_component_exactly_once(fcos: list[Component], fcos_plan: list[Chunk]) -> None:
    assert_valid(fcos_plan, fcos, 64)
    # the fixture has a component of size 0; it is assigned too
    zero = [c.name for c in fcos if c.size == 0]
    assert zero
    assert all(any(name in chunk.components for chunk in fcos_plan) for name in zero)


def test_fcos_output_order(fcos_plan: list[Chunk]) -> None:
    nonempty = fcos_plan[:-1]
    assert all(chunk.components for chunk in nonempty)
    keys = [(-chunk.size, chunk.components) for chunk in nonempty]
    assert keys == sorted(keys)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deterministic_under_shuffle(
    fcos: list[Component], fcos_plan: list[Chunk], seed: int
) -> None:
    shuffled = list(fcos)
    random.Random(seed).shuffle(shuffled)
    assert plan_chunks(shuffled) == fcos_plan


def test_divide_and_conquer_path_also_meets_target(
    fcos: list[Component], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunking, "_EXACT_DP_LIMIT", 0)
    chunks = plan_chunks(fcos)
    assert_valid(chunks, fcos, 64)
    assert expected_download(chunks, fcos) <= TARGET_E


@pytest.mark.parametrize("max_layers", [2, 3, 5, 16])
def test_small_max_layers(fcos: list[Component], max_layers: int) -> None:
    chunks = plan_chunks(fcos, max_layers=max_layers)
    assert len(chunks) == max_layers
    assert chunks[-1] == Chunk((), 0)
    assert_valid(chunks, fcos, max_layers)
    e = expected_download(chunks, fcos)
    assert ideal_download(fcos) <= e <= single_layer_download(fcos)
    if max_layers == 2:
        assert e == pytest.approx(single_layer_download(fcos))


def test_more_layers_never_worse(fcos: list[Component]) -> None:
    figures = [expected_download(plan_chunks(fcos, max_layers=k), fcos) for k in (2, 5, 16, 64)]
    assert figures == sorted(figures, reverse=True)
    assert figures[0] > figures[-1]


def test_few_components_get_a_layer_each(fcos: list[Component]) -> None:
    few = sorted(fcos, key=lambda c: c.name)[:10]
    chunks = plan_chunks(few)
    assert len(chunks) == 11
    assert all(len(chunk.components) == 1 for chunk in chunks[:-1])
    assert expected_download(chunks, few) == pytest.approx(ideal_download(few))


def test_empty_and_zero_size_components() -> None:
    assert plan_chunks([]) == [Chunk((), 0)]
    comps = [Component("a", 0, 10), Component("b", 0, 0), Component("c", 5, ALWAYS)]
    chunks = plan_chunks(comps, max_layers=2)
    assert chunks == [Chunk(("a", "b", "c"), 5), Chunk((), 0)]


def test_splitting_uses_spare_layers() -> None:
    # Two components that always change: grouping them is free for E, but with spare
    # layers they still get one each.
    comps = [Component("a", 10, ALWAYS), Component("b", 20, ALWAYS), Component("c", 0, 0)]
    chunks = plan_chunks(comps, max_layers=4)
    assert len(chunks) == 4
    assert_valid(chunks, comps, 4)


# --- input errors ---------------------------------------------------------------------


@pytest.mark.parametrize("max_layers", [1, 0, -3])
def test_max_layers_below_two_is_user_error(fcos: list[Component], max_layers: int) -> None:
    with pytest.raises(UserError, match="max_layers"):
        plan_chunks(fcos, max_layers=max_layers)


def test_duplicate_or_bad_names_are_user_errors() -> None:
    with pytest.raises(UserError, match="twice"):
        plan_chunks([Component("a", 1, 1), Component("a", 2, 2)])
    with pytest.raises(UserError, match="name"):
        plan_chunks([Component("a,b", 1, 1)])
    with pytest.raises(UserError, match="name"):
        plan_chunks([Component("", 1, 1)])
    with pytest.raises(UserError, match="negative"):
        plan_chunks([Component("a", -1, 1)])


def test_expected_download_unknown_component(fcos: list[Component]) -> None:
    with pytest.raises(UserError, match="no-such-package"):
        expected_download([Chunk(("no-such-package",), 1)], fcos)


# --- load_contentmeta -----------------------------------------------------------------


def write_json(tmp_path: Path, data: object, name: str = "meta.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_load_plain_json_equals_gzip(fcos: list[Component], tmp_path: Path) -> None:
    data = json.loads(gzip.decompress(FIXTURE.read_bytes()))
    assert load_contentmeta(write_json(tmp_path, data)) == fcos


def test_load_merges_duplicate_names(tmp_path: Path) -> None:
    data = [
        {"name": "glibc", "size": 10, "change_frequency": 3},
        {"name": "glibc", "size": 5, "change_frequency": 7},
        {"name": "bash", "size": 1, "change_frequency": 0},
    ]
    assert load_contentmeta(write_json(tmp_path, data)) == [
        Component("bash", 1, 0),
        Component("glibc", 15, 7),
    ]


def test_load_not_json(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    path.write_text("this is not json {")
    with pytest.raises(UserError, match="not valid JSON"):
        load_contentmeta(path)


def test_load_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "meta.json.gz"
    path.write_bytes(FIXTURE.read_bytes()[:200])
    with pytest.raises(UserError, match="gzip"):
        load_contentmeta(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read"):
        load_contentmeta(tmp_path / "absent.json")


def test_load_not_a_list(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="list"):
        load_contentmeta(write_json(tmp_path, {"name": "a"}))


def test_load_missing_key(tmp_path: Path) -> None:
    data = [{"name": "a", "size": 1, "change_frequency": 1}, {"name": "b", "size": 2}]
    with pytest.raises(UserError, match=r"entry 1: missing key 'change_frequency'"):
        load_contentmeta(write_json(tmp_path, data))


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"name": "a", "size": "12", "change_frequency": 1}, "size"),
        ({"name": "a", "size": 1.5, "change_frequency": 1}, "size"),
        ({"name": "a", "size": 1, "change_frequency": True}, "change_frequency"),
        ({"name": 7, "size": 1, "change_frequency": 1}, "name"),
    ],
)
def test_load_wrong_type(tmp_path: Path, entry: dict[str, object], key: str) -> None:
    with pytest.raises(UserError, match=f"entry 0: '{key}' must be"):
        load_contentmeta(write_json(tmp_path, [entry]))


def test_load_entry_not_object_or_negative(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="expected an object"):
        load_contentmeta(write_json(tmp_path, ["bash"]))
    with pytest.raises(UserError, match="negative"):
        load_contentmeta(write_json(tmp_path, [{"name": "a", "size": -1, "change_frequency": 0}]))


# --- with a previous image ------------------------------------------------------------


def as_previous(chunks: Sequence[Chunk]) -> list[list[str]]:
    """What a previous image's ostree.components annotations give, split on ','."""
    return [[name for name in ",".join(chunk.components).split(",") if name] for chunk in chunks]


def b2_update(fcos: Sequence[Component], seed: int) -> list[Component]:
    """B2 scenario: 10 components change size by +-20 %, 3 new components appear."""
    rng = random.Random(seed)
    comps = sorted(fcos, key=lambda c: c.name)
    resized = {c.name for c in rng.sample(comps, 10)}
    updated = [
        Component(c.name, int(c.size * rng.choice((0.8, 1.2))), c.change_frequency)
        if c.name in resized
        else c
        for c in comps
    ]
    for i in range(3):
        donor = rng.choice(comps)
        updated.append(Component(f"new-package-{seed}-{i}", donor.size, donor.change_frequency))
    return updated


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_b2_stability(fcos: list[Component], fcos_plan: list[Chunk], seed: int) -> None:
    updated = b2_update(fcos, seed)
    chunks = plan_chunks(updated, previous=as_previous(fcos_plan))
    assert_valid(chunks, updated, 64)
    assert changed_layers(fcos_plan, chunks) <= 4
    # by design only the previous reserved layer changes: it receives the new packages
    assert changed_layers(fcos_plan, chunks) == 1
    new_names = {c.name for c in updated} - {c.name for c in fcos}
    assert set(chunks[len(fcos_plan) - 1].components) == new_names
    # keeping the layout costs little against planning afresh
    fresh = expected_download(plan_chunks(updated), updated)
    assert expected_download(chunks, updated) <= fresh * 1.03


def test_b2_stability_over_successive_builds(fcos: list[Component]) -> None:
    """Later builds without a reserved layer left still change one layer per build."""
    chunks = plan_chunks(fcos)
    comps = list(fcos)
    for build in range(4):
        updated = b2_update(comps, 100 + build)
        new = plan_chunks(updated, previous=as_previous(chunks))
        assert_valid(new, updated, 64)
        assert changed_layers(chunks, new) <= 1
        chunks, comps = new, updated


def test_previous_without_changes_is_identity(
    fcos: list[Component], fcos_plan: list[Chunk]
) -> None:
    assert plan_chunks(fcos, previous=as_previous(fcos_plan)) == fcos_plan


def test_previous_drops_vanished_components(fcos: list[Component], fcos_plan: list[Chunk]) -> None:
    rng = random.Random(7)
    vanished = {c.name for c in rng.sample(fcos, 5)}
    # also drop a whole single-component chunk
    single = next(chunk for chunk in fcos_plan if len(chunk.components) == 1)
    vanished |= set(single.components)
    remaining = [c for c in fcos if c.name not in vanished]
    chunks = plan_chunks(remaining, previous=as_previous(fcos_plan))
    assert_valid(chunks, remaining, 64)
    assert single not in chunks
    kept = [tuple(name for name in chunk.components if name not in vanished) for chunk in fcos_plan]
    assert [chunk.components for chunk in chunks] == [names for names in kept if names] + [()]


def test_previous_without_reserved_chunk_appends_new_chunk(
    fcos: list[Component], fcos_plan: list[Chunk]
) -> None:
    previous = as_previous(fcos_plan)[:-1]  # no reserved layer, 63 chunks
    updated = b2_update(fcos, 11)
    chunks = plan_chunks(updated, previous=previous)
    assert_valid(chunks, updated, 64)
    assert chunks[:-1] == [
        Chunk(c.components, sum(u.size for u in updated if u.name in c.components))
        for c in fcos_plan[:-1]
    ]
    assert set(chunks[-1].components) == {c.name for c in updated} - {c.name for c in fcos}


def test_previous_full_merges_new_into_cheapest_chunk(
    fcos: list[Component], fcos_plan: list[Chunk]
) -> None:
    previous = as_previous(fcos_plan)[:-1]
    updated = b2_update(fcos, 12)
    chunks = plan_chunks(updated, previous=previous, max_layers=63)
    assert_valid(chunks, updated, 63)
    assert len(chunks) == 63
    assert changed_layers(fcos_plan[:-1], chunks) == 1


def test_previous_with_more_layers_than_allowed_is_merged(
    fcos: list[Component], fcos_plan: list[Chunk]
) -> None:
    chunks = plan_chunks(fcos, previous=as_previous(fcos_plan), max_layers=16)
    assert len(chunks) == 16
    assert chunks[-1] == Chunk((), 0)
    assert_valid(chunks, fcos, 16)
    # merging keeps previous groupings together
    previous_sets = [set(c.components) for c in fcos_plan if c.components]
    for old in previous_sets:
        assert any(old <= set(chunk.components) for chunk in chunks)


def test_previous_with_no_surviving_component_plans_afresh(fcos: list[Component]) -> None:
    assert plan_chunks(fcos, previous=[["gone"], []]) == plan_chunks(fcos)


def test_previous_as_strings_is_user_error(fcos: list[Component], fcos_plan: list[Chunk]) -> None:
    annotations = [",".join(chunk.components) for chunk in fcos_plan]
    with pytest.raises(UserError, match="string"):
        plan_chunks(fcos, previous=annotations)


def test_components_changing_in_every_build_get_a_layer_each(fcos: list[Component]) -> None:
    plan = plan_chunks(fcos)
    always = {c.name for c in fcos if c.change_frequency == ALWAYS}
    assert len(always) == 2
    for name in always:
        [chunk] = [c for c in plan if name in c.components]
        assert chunk.components == (name,)
