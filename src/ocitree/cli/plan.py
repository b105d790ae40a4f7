"""``ocitree plan``: the layer plan of a commit (or of component metadata alone) and what
an update costs a device under the weekly-update model of BENCHMARKS.md B2."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ocitree.cli.encapsulate import add_chunking_options, chunking_options
from ocitree.cli.options import add_json, add_registry_options, human_size
from ocitree.cli.output import print_fields, print_json, print_table
from ocitree.container.chunking import (
    Component,
    expected_download,
    ideal_download,
    load_contentmeta,
    plan_chunks,
    single_layer_download,
)
from ocitree.container.encapsulate import read_commit_content
from ocitree.errors import UserError
from ocitree.ostree.repo import Repo


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "plan",
        parents=[common],
        help="show the layer plan and the expected update download",
        description="Show how a commit's components are split into layers and how many "
        "bytes a device is expected to download per weekly update.",
        epilog="examples: ocitree plan --repo repo rhel/8/x86_64/edge; "
        "ocitree plan --contentmeta fedora-coreos-contentmeta.json.gz",
    )
    p.add_argument("--repo", type=Path, help="the ostree repository")
    p.add_argument("ref", metavar="REF", nargs="?", help="ref or commit checksum")
    add_chunking_options(p)
    add_registry_options(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts = chunking_options(args)
    components: list[Component]
    if args.ref:
        if args.repo is None:
            raise UserError("REF needs --repo")
        content = read_commit_content(Repo(args.repo), args.ref, contentmeta=args.contentmeta)
        components = sorted(content.ownership.components.values(), key=lambda c: c.name)
    elif args.repo is not None:
        raise UserError("--repo needs REF", hint="ocitree plan --repo REPO REF")
    elif args.contentmeta:
        components = load_contentmeta(args.contentmeta)
    else:
        raise UserError("nothing to plan", hint="give --repo REPO REF, or --contentmeta FILE")
    chunks = plan_chunks(components, max_layers=opts["max_layers"], previous=opts["previous"])
    expected = expected_download(chunks, components)
    ideal = ideal_download(components)
    single = single_layer_download(components)
    prob = {c.name: c.probability for c in components}
    layers: list[dict[str, Any]] = []
    for chunk in chunks:
        p_none = 1.0
        for name in chunk.components:
            p_none *= 1.0 - prob[name]
        layers.append(
            {
                "components": list(chunk.components),
                "size": chunk.size,
                "change_probability": 1.0 - p_none,
            }
        )
    total = sum(c.size for c in components)
    if args.json:
        print_json(
            {
                "layers": layers,
                "total_size": total,
                "expected_download": expected,
                "ideal_download": ideal,
                "single_layer_download": single,
                "components": len(components),
            }
        )
        return 0
    rows = []
    for i, layer in enumerate(layers, 1):
        names = ", ".join(layer["components"]) or "(reserved for new packages)"
        if len(names) > 70:
            names = names[:67] + "..."
        rows.append(
            [str(i), human_size(layer["size"]), f"{layer['change_probability']:.2f}", names]
        )
    print_table(
        "Chunk layers (after the commit layer)", ["#", "Size", "P(change)", "Components"], rows
    )
    print()
    print_fields(
        [
            ("Components", str(len(components))),
            ("Content", human_size(total)),
            ("Expected download per weekly update", human_size(expected)),
            ("Ideal (one layer per component)", human_size(ideal)),
            ("One single layer", human_size(single)),
        ]
    )
    return 0
