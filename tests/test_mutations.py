"""The mutation table of ``benchmarks/mutations.py`` still matches the source (no test is run here).

A row whose text no longer occurs exactly once would be skipped as an error, not applied, so
each edit of a sabotaged file must keep the table in step; the script itself runs for minutes
and is run by hand (see its docstring)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("mutations", REPO / "benchmarks" / "mutations.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutations", module)
    spec.loader.exec_module(module)
    return module


def test_every_sabotage_text_occurs_exactly_once() -> None:
    m = _load()
    assert m.check(m.SABOTAGES) == []
    assert len({r.name for r in m.SABOTAGES}) == len(m.SABOTAGES)
    # every row names at least one test file that exists (a node id's file part counts)
    assert all(any(a.startswith("tests/") and (REPO / a.split("::")[0]).is_file() for a in r.tests)
               for r in m.SABOTAGES)


def test_a_stale_row_is_reported(tmp_path: Path) -> None:
    m = _load()
    (tmp_path / "x.py").write_text("a = 1\na = 1\n")
    rows = [m.Sabotage("e", "gone", "0", "x.py", "b = 2", "b = 3", ("tests/t.py",)),
            m.Sabotage("e", "twice", "0", "x.py", "a = 1", "a = 2", ("tests/t.py",)),
            m.Sabotage("e", "missing", "0", "y.py", "a", "b", ("tests/t.py",))]
    problems = m.check(rows, tmp_path)
    assert len(problems) == 3 and "0 times" in problems[0] and "2 times" in problems[1] and "no file" in problems[2]
