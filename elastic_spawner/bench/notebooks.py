"""The benchmark notebooks: percent-format ``.py`` files shipped as package data.

Why files and not Python lists: a notebook is read by people (what does the benchmark run?),
by the harness (a list of cells), and by Kishu (which insists on a real ``.ipynb`` next to its
database). A percent-format file (``# %%`` separates cells, as in jupytext, VS Code and Spyder)
is all three at once, and stays valid Python.

Conventions inside a notebook file:

* a header of ``# key: value`` comment lines before the first cell (``title``, ``family``,
  ``models``: which ElasticNotebook evaluation notebook it imitates, ``stresses``; for the
  ``engine`` family, ``expect_shipped`` / ``expect_recomputed``: names the plan must ship /
  recompute, checked by the report);
* ``# %% [parameters]``: sizes for the full run (papermill's idea);
* ``# %% [quick]``: the same names with small sizes, used *instead* of ``[parameters]`` by
  ``--quick`` (a CI smoke run); never both;
* every other ``# %%`` starts an ordinary cell.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

_CELL = re.compile(r"^# %%(.*)$")
_HEADER = re.compile(r"^#\s*([a-z_]+):\s*(.*)$")


@dataclass
class Notebook:
    """One benchmark notebook, with the cells of the chosen size already selected."""

    name: str
    cells: list[str]
    meta: dict[str, str] = field(default_factory=dict)
    large: bool = False  # the >= 2 GB state notebook (throughput measured against a raw write)

    @property
    def title(self) -> str:
        return self.meta.get("title", self.name)

    @property
    def family(self) -> str:
        return self.meta.get("family", "")

    @property
    def expect(self) -> dict[str, list[str]]:
        """What the plan must do, from ``# expect_shipped:`` / ``# expect_recomputed:`` headers."""
        out = {}
        for what in ("shipped", "recomputed"):
            names = [n.strip() for n in self.meta.get(f"expect_{what}", "").split(",") if n.strip()]
            if names:
                out[what] = names
        return out

    def to_ipynb(self) -> dict:
        """nbformat 4 JSON (what Kishu reads its cells from)."""
        return {
            "cells": [
                {"cell_type": "code", "execution_count": None, "id": f"c{i:03d}", "metadata": {},
                 "outputs": [], "source": src}
                for i, src in enumerate(self.cells)
            ],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }

    def write_ipynb(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_ipynb(), indent=1))
        return path


def parse(name: str, text: str, *, quick: bool = False) -> Notebook:
    """Split a percent-format file into cells; keep `[quick]` or `[parameters]`, not both."""
    meta: dict[str, str] = {}
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = _CELL.match(line)
        if m:
            cells.append((m.group(1).strip(), []))
        elif cells:
            cells[-1][1].append(line)
        else:
            h = _HEADER.match(line)
            if h:
                meta[h.group(1)] = h.group(2).strip()
    out: list[str] = []
    for tag, lines in cells:
        if tag == ("[parameters]" if quick else "[quick]"):
            continue
        src = "\n".join(lines).strip("\n")
        if src.strip():
            out.append(src)
    return Notebook(name=name, cells=out, meta=meta, large=meta.get("family") == "large-state")


def notebook_dir() -> Path:
    """Where the notebooks are, for an installed package as well as a source checkout."""
    return Path(str(resources.files("elastic_spawner.bench") / "notebooks"))


def available() -> list[str]:
    return sorted(p.stem for p in notebook_dir().glob("*.py") if not p.name.startswith("_"))


def load(name: str, *, quick: bool = False) -> Notebook:
    path = notebook_dir() / f"{name}.py"
    if not path.is_file():
        raise KeyError(f"no benchmark notebook {name!r}; available: {', '.join(available())}")
    return parse(name, path.read_text(), quick=quick)


def load_all(names: list[str] | None = None, *, quick: bool = False) -> list[Notebook]:
    return [load(n, quick=quick) for n in (names or available())]
