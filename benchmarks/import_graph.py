"""Arrows between the package's layers, read from the source (static; lazy imports inside functions included).

    python benchmarks/import_graph.py [-v]

One line per layer (a top-level module or subpackage of ``moondream_nb``): the layers it imports.
``__init__`` is the package face: an arrow to it means ``from .. import X`` of a sibling module. ``-v``
lists each import. Not part of the test suite; DESIGN.md section 2 says which arrows may exist.
"""

from __future__ import annotations

import ast
import collections
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "moondream_nb"


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: pathlib.Path) -> tuple[str, list[str]]:
    """(module name, the moondream_nb modules it imports)."""
    rel = path.relative_to(ROOT.parent).with_suffix("")
    module = ".".join(rel.parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("moondream_nb"):
                found.append(target)
                if target == "moondream_nb":
                    found += [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("moondream_nb")]
    return module, found


def main() -> None:
    edges: dict[str, set] = collections.defaultdict(set)
    for path in sorted(ROOT.rglob("*.py")):
        module, targets = imports(path)
        for target in targets:
            if layer(module) != layer(target):
                edges[layer(module)].add((layer(target), module, target))
    for source in sorted(edges):
        print(f"{source:<12} -> {', '.join(sorted({t for t, *_ in edges[source]}))}")
        if "-v" in sys.argv:
            for _, module, target in sorted(edges[source]):
                print(f"    {module} -> {target}")


if __name__ == "__main__":
    main()
