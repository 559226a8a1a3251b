"""The mutation report's accounting (scripts/mutation.py), on made-up results: the run itself
is mutmut's and takes minutes (report/MUTATION.md)."""

from __future__ import annotations

from pathlib import Path

from scripts.mutation import Mutant, _function_of, load_harmless, render, summarise

TASKS = "src/records/task_store.py"
QUEUE = "src/queue/job_queue.py"


def mutant(module: str, status: str, mutated: str = "x") -> Mutant:
    return Mutant(f"{module}.x_f__mutmut_1", module, "f", status, "line", mutated)


def test_kill_rate_counts_timeouts_as_detected_and_harmless_survivors_apart():
    mutants = [
        mutant(TASKS, "killed"),
        mutant(TASKS, "timeout"),
        mutant(TASKS, "survived", "harmless"),
        mutant(TASKS, "survived", "real"),
        mutant(QUEUE, "no tests"),
    ]
    summary = summarise(mutants, {(TASKS, "f", "line", "harmless"): "Equivalent: why"})
    tasks = summary["modules"][TASKS]
    assert (tasks["killed"], tasks["timeout"], tasks["survived"], tasks["total"]) == (1, 1, 2, 4)
    assert (tasks["kill_rate"], tasks["harmless"], tasks["kill_rate_without_harmless"]) == (
        0.5,
        1,
        0.6667,
    )
    assert (
        summary["modules"][QUEUE]["no_tests"] == 1 and summary["modules"][QUEUE]["kill_rate"] == 0
    )
    assert summary["modules"]["src/results/history.py"]["kill_rate"] is None  # nothing ran
    assert summary["total"]["total"] == 5 and summary["total"]["kill_rate"] == 0.4
    assert [m.harmless for m in mutants[2:4]] == ["Equivalent: why", None]


def test_the_report_lists_every_survivor_and_says_which_are_unjudged():
    mutants = [mutant(TASKS, "killed"), mutant(TASKS, "survived", "a | b")]
    run = {
        "date": "2026-12-02 16:00 UTC",
        "tool_version": "3.8.1",
        "pytest_version": "9",
        "max_children": 2,
        "command": "python -m scripts.mutation",
        "scope": "all",
        "tests": ["tests/unit/records"],
        "run_time": "1 min 0 s",
    }
    text = render(run, summarise(mutants, {}), mutants)
    assert "| **total** |  | 1 | 1 | 0 | 0 | 0 | 2 | 50.0 %" in text
    assert "`a \\| b`" in text and "not judged" in text


def test_harmless_entries_are_keyed_by_module_function_and_change(tmp_path: Path):
    path = tmp_path / "harmless.toml"
    path.write_text(
        '[[harmless]]\nmodule = "m.py"\nfunction = "f"\noriginal = "a"\nmutated = "b"\n'
        'reason = "Log text only"\n'
    )
    assert load_harmless(path) == {("m.py", "f", "a", "b"): "Log text only"}
    assert load_harmless(tmp_path / "missing.toml") == {}


def test_function_names_are_read_back_from_mutmut_names():
    assert _function_of("src.queue.recovery.x__requeue_one__mutmut_3") == "_requeue_one"
    assert _function_of("src.results.history.xǁHistoryEntryǁline__mutmut_2") == "HistoryEntry.line"
