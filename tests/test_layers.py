"""The package's layers import only downward: ops <- models <- engine <- cli, with data and karyotype
beside models (they may use ops, never models, engine or the CLI), and data below karyotype:
karyotype reads data's formats and class names, data imports nothing of karyotype (the two no
longer import each other)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "chromoseg"

#: package -> the chromoseg sub-packages it must never import
FORBIDDEN = {
    "ops": {"models", "engine", "cli", "data", "karyotype"},
    "models": {"engine", "cli"},
    "data": {"engine", "cli", "karyotype"},
    "karyotype": {"engine", "cli"},
    "engine": {"cli"},
    "review": {"engine", "cli"},  # the review app reads predict's files through data and karyotype
}


def imported_subpackages(path: Path, root: Path = PKG) -> set[str]:
    """``chromoseg.X`` sub-packages a module imports (absolute or relative, at any depth)."""
    tree = ast.parse(path.read_text(), str(path))
    depth = len(path.relative_to(root).parts) - 1  # a module of chromoseg/X/ is 1 deep
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = list(path.relative_to(root).parts[:-1])[: max(depth - node.level + 1, 0)]
                mod = ".".join(["chromoseg", *base, *([node.module] if node.module else [])])
                names = [mod] + ([f"{mod}.{a.name}" for a in node.names] if not node.module else [])
            else:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if len(parts) >= 2 and parts[0] == "chromoseg":
                out.add(parts[1])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    bad = []
    for path in sorted((PKG / package).rglob("*.py")):
        hit = imported_subpackages(path) & FORBIDDEN[package]
        if hit:
            bad.append(f"{path.relative_to(PKG)} imports chromoseg.{', chromoseg.'.join(sorted(hit))}")
    assert not bad, "\n".join(bad)


def test_the_iscn_notation_is_one_module():
    """``chromoseg.karyotype.iscn`` (its older name) is ``chromoseg.data.iscn`` itself, not a copy."""
    import chromoseg.data.iscn
    import chromoseg.karyotype.iscn
    from chromoseg.karyotype.iscn import parse_karyotype

    assert chromoseg.karyotype.iscn is chromoseg.data.iscn and parse_karyotype is chromoseg.data.iscn.parse_karyotype


def test_the_check_sees_relative_and_absolute_imports(tmp_path):
    mod = tmp_path / "models" / "probe.py"
    mod.parent.mkdir()
    mod.write_text("from ..engine import train\nimport chromoseg.cli\nfrom . import rpn\nimport numpy\n")
    assert imported_subpackages(mod, root=tmp_path) == {"engine", "cli", "models"}
