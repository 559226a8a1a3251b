"""report/RELIABILITY.md names, row by row, the test that shows each claim; this keeps those names
true, so a renamed or deleted test breaks the build instead of leaving a row pointing at nothing.

The rules, checked on the report's text:
- Every table row names a test in backticks, `tests/<path>.py::test_name` (a `[case]` suffix
  may follow) or a whole test module `tests/<path>/test_x.py`. A table of figures from a run by
  hand (the sections in FIGURE_SECTIONS) may instead have the test named once in its section's
  text before the table.
- Every backticked `tests/<path>.py::name` resolves: the file exists and defines `def name` or
  `async def name`; a `[case]` suffix must match a case pytest collects (`*` is a wildcard).
- Every backticked path under tests/, src/, scripts/, deploy/ or report/ exists, and so does the
  module of every `python -m scripts.…` or `python -m src.…`.
- A backticked bare `test_name` is refused: without its file nobody can find it.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RELIABILITY = ROOT / "report" / "RELIABILITY.md"

# Sections whose table holds figures of one run by hand: the test is named above the table.
FIGURE_SECTIONS = ("Soak:", "Wait estimate")

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"`([^`]+)`")
# tests/api/test_x.py::test_name[case]; the case may hold anything but a closing bracket.
TEST_REF = re.compile(r"(?<![\w/.])(tests/[\w/.-]+\.py)(?:::(\w+)(?:\[([^\]]*)\])?)?")
PATH_REF = re.compile(r"(?<![\w/.])((?:tests|src|scripts|deploy|report)/[\w/.-]*\w)")
MODULE_REF = re.compile(r"python -m ((?:scripts|src)(?:\.\w+)+)")
BARE_TEST = re.compile(r"^test_\w+$")
SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


@dataclass(frozen=True)
class Ref:
    path: str
    name: str | None
    case: str | None

    def __str__(self) -> str:
        text = self.path + (f"::{self.name}" if self.name else "")
        return text + (f"[{self.case}]" if self.case is not None else "")


def code_spans(text: str) -> list[str]:
    """The contents of fenced blocks and of inline backticks (which may span lines)."""
    blocks = FENCE.findall(text)
    return blocks + SPAN.findall(FENCE.sub("", text))


def refs_in(text: str) -> list[Ref]:
    return [Ref(*m.groups()) for span in code_spans(text) for m in TEST_REF.finditer(span)]


def names_a_test(text: str) -> bool:
    """A row (or a figure table's preamble) names a test function or a whole test module."""
    return any(r.name or Path(r.path).name.startswith("test_") for r in refs_in(text))


def defines(path: Path, name: str) -> bool:
    return bool(
        re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", path.read_text(), re.M)
    )


def collected_cases(refs: list[Ref], root: Path) -> dict[tuple[str, str], set[str]]:
    """The case ids pytest collects for each (file, function) named with a [case]. Without the
    conftest files: they hold fixtures, not cases, and the root one imports the recognizer."""
    files = sorted({r.path for r in refs})
    options = ["--collect-only", "-q", "--noconftest", "-p", "no:cacheprovider"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *options, *files],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cases: dict[tuple[str, str], set[str]] = {}
    for line in run.stdout.splitlines():
        node = re.fullmatch(r"(tests/\S+\.py)::(\w+)\[(.*)\]", line.strip())
        if node:
            cases.setdefault((node[1], node[2]), set()).add(node[3])
    return cases


def reference_problems(text: str, root: Path) -> list[str]:
    """Every backticked reference in `text` that does not resolve under `root`."""
    problems = []
    spans = code_spans(text)
    for ref in refs_in(text):
        path = root / ref.path
        if not path.is_file():
            problems.append(f"{ref}: no such file")
        elif ref.name and not defines(path, ref.name):
            problems.append(f"{ref}: {ref.path} defines no {ref.name}")
    for span in spans:
        for path in PATH_REF.findall(span):
            if not TEST_REF.fullmatch(path) and not (root / path).exists():
                problems.append(f"{path}: no such file")
        for module in MODULE_REF.findall(span):
            base = root / module.replace(".", "/")
            if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                problems.append(f"python -m {module}: no such module")
        if BARE_TEST.match(span.strip()):
            problems.append(f"`{span}`: name its file, `tests/<path>.py::{span}`")
    with_cases = [
        r for r in refs_in(text) if r.name and r.case is not None and (root / r.path).is_file()
    ]
    if with_cases:
        cases = collected_cases(with_cases, root)
        for ref in with_cases:
            known = cases.get((ref.path, ref.name), set())  # type: ignore[arg-type]
            if not fnmatch.filter(known, ref.case):  # type: ignore[arg-type]
                problems.append(f"{ref}: pytest collects no such case")
    return problems


def row_problems(text: str) -> list[str]:
    """Table rows that name no test, section by section."""
    problems = []
    section = ""
    since_heading: list[str] = []
    table: list[str] = []

    def close_table() -> None:
        if not table:
            return
        if len(table) < 2 or not SEPARATOR.match(table[1]):
            problems.append(f"{section}: a table without a header separator: {table[0][:80]}")
            return
        figures = section.startswith(FIGURE_SECTIONS)
        if figures and names_a_test("\n".join(since_heading)):
            return
        for row in table[2:]:
            if not names_a_test(row):
                where = "above the table or in" if figures else "in"
                problems.append(f"{section}: name the test {where} this row: {row[:100]}")

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        close_table()
        if table:
            since_heading.extend(table)
            table = []
        if line.startswith("#"):
            section, since_heading = line.lstrip("#").strip(), []
        else:
            since_heading.append(line)
    close_table()
    return problems


def test_every_row_of_the_reliability_report_names_a_test_that_exists():
    text = RELIABILITY.read_text(encoding="utf-8")
    problems = row_problems(text) + reference_problems(text, ROOT)
    assert not problems, "report/RELIABILITY.md:\n" + "\n".join(problems)


# --- the guard itself: it must catch what it is for ---------------------------------------

GOOD_ROW = "| killed | `tests/unit/test_reports.py::test_the_guard_catches_a_row_without_a_test` |"


def table(section: str, *rows: str, above: str = "") -> str:
    return "\n".join([f"## {section}", above, "", "| what | test |", "|---|---|", *rows, ""])


def test_the_guard_catches_a_row_without_a_test():
    text = table("Faults", GOOD_ROW, "| Redis down | the worker waited |")
    assert row_problems(text) == [
        "Faults: name the test in this row: | Redis down | the worker waited |"
    ]
    # A script alone or a support module does not count as the test.
    assert row_problems(table("Load", "| `scripts/soak.py`, `tests/support/fixtures.py` |"))
    assert row_problems(table("Load", GOOD_ROW, "| x | `tests/system/test_load.py` |")) == []


def test_a_figure_table_may_name_its_test_above_it():
    row = "| done | 1000 |"
    above = "CI: `tests/system/test_soak.py::test_short_soak_loses_nothing_and_runs_nothing_twice`"
    assert row_problems(table("Soak: 1000 jobs", row, above=above)) == []
    assert row_problems(table("Soak: 1000 jobs", row, above="`scripts/soak.py`"))
    assert row_problems(table("Faults", row, above=above))  # not a table of figures


def test_the_guard_catches_dangling_references():
    text = "\n".join(
        [
            "`tests/unit/test_reports.py::test_no_such_test`",
            "`tests/unit/no_such_file.py::test_x`",
            "`scripts/no_such_script.py`",
            "`python -m scripts.no_such_module`",
            "`test_the_guard_catches_dangling_references`",
            "`tests/unit/test_reports.py::test_a_parametrized_guard_check[one]`",
            "`tests/unit/test_reports.py::test_a_parametrized_guard_check[t*]`",
            "`tests/unit/test_reports.py::test_a_parametrized_guard_check[three]`",
        ]
    )
    assert reference_problems(text, ROOT) == [
        "tests/unit/test_reports.py::test_no_such_test: "
        "tests/unit/test_reports.py defines no test_no_such_test",
        "tests/unit/no_such_file.py::test_x: no such file",
        "scripts/no_such_script.py: no such file",
        "python -m scripts.no_such_module: no such module",
        "`test_the_guard_catches_dangling_references`: name its file, "
        "`tests/<path>.py::test_the_guard_catches_dangling_references`",
        "tests/unit/test_reports.py::test_a_parametrized_guard_check[three]: "
        "pytest collects no such case",
    ]


@pytest.mark.parametrize("case", ["one", "two"])
def test_a_parametrized_guard_check(case: str):
    """A parametrized test for the guard's case check to find (and not find)."""
    assert case in ("one", "two")
