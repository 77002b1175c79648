"""Every ``serving/`` or ``variants/`` path the docs name exists, and so does every project module a
docstring names in a ``:mod:`` role: a renamed file cannot leave a README or a docstring pointing
at nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(r"(?<![\w./-])((?:serving|variants)/[\w./-]*[\w/])")
MODULE = re.compile(r":mod:`~?((?:serving|variants)(?:\.\w+)+)`")
CODE = ("serving", "variants", "benchmarks", "tests", "scripts")


def _markdown() -> dict[Path, str]:
    files = [
        *ROOT.glob("*.md"),
        *ROOT.glob("helm/**/*.md"),
        *(f for d in CODE for f in ROOT.glob(f"{d}/**/*.md")),
    ]
    return {f: f.read_text(encoding="utf-8") for f in files if ".venv" not in f.parts}


def _docstrings() -> dict[Path, str]:
    out = {}
    for d in CODE:
        for f in ROOT.glob(f"{d}/**/*.py"):
            tree = ast.parse(f.read_text(encoding="utf-8"))
            nodes = [
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            out[f] = "\n".join(doc for n in nodes if (doc := ast.get_docstring(n)))
    return out


def _module_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    # `serving.x.name` may name a member of module `serving.x`: some prefix must be a module.
    for n in range(len(parts), 1, -1):
        base = ROOT.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def test_every_path_the_docs_and_docstrings_name_exists():
    missing = [
        f"{f.relative_to(ROOT)}: {m}"
        for f, text in {**_markdown(), **_docstrings()}.items()
        for m in PATH.findall(text)
        if "*" not in m and not (ROOT / m.rstrip(".")).exists()
    ]
    assert missing == []


def test_every_module_a_docstring_names_exists():
    missing = [
        f"{f.relative_to(ROOT)}: {m}"
        for f, text in _docstrings().items()
        for m in MODULE.findall(text)
        if not _module_exists(m)
    ]
    assert missing == []
