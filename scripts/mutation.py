"""Mutation testing of the job core: do the fast unit tests notice when its code is wrong?

mutmut (configured in pyproject.toml [tool.mutmut]) makes small changes ("mutants") to the
task records, retention, history, recovery and queue modules, one at a time, and runs the
fast unit tests that reach the changed function; a mutant the tests do not fail on survived.
This script runs it and renders report/MUTATION.md and report/mutation.json: per module
killed / survived / timeout / total and the kill rate, and every survivor, each with the
reason it is harmless when scripts/mutation_harmless.toml (hand-written) gives one.

    uv run --frozen --no-sync python -m scripts.mutation --fresh     # the full run (5-10 min)
    uv run --frozen --no-sync python -m scripts.mutation --sample 40 # a seeded random sample
    uv run --frozen --no-sync python -m scripts.mutation --report-only   # re-render the report
    uv run --frozen --no-sync python -m scripts.mutation 'src.queue.recovery.x__fail*'  # re-test

Results are kept in ./mutants/ (git-ignored) between runs: a plain run tests only mutants
without a result yet (functions changed since are re-mutated); name mutants (globs) to test
them again, e.g. after adding a test. The report counts every mutant with a result, or only
the sample's.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
HARMLESS_FILE = ROOT / "scripts" / "mutation_harmless.toml"
REPORT_MD = ROOT / "report" / "MUTATION.md"
REPORT_JSON = ROOT / "report" / "mutation.json"
LAST_RUN = MUTANTS / "last-run.json"
# The job core, as the report names it.
MODULES = {
    "src/records/task_store.py": "task records",
    "src/uploads/recordings.py": "retention",
    "src/results/history.py": "history",
    "src/queue/recovery.py": "recovery",
    "src/queue/job_queue.py": "queue",
}
TARGET = 0.90
# mutmut's exit-code vocabulary, folded into the report's columns.
COLUMN_OF = {
    "killed": "killed",
    "timeout": "timeout",
    "survived": "survived",
    "no tests": "no tests",
    "caught by type check": "killed",
}


# ---- running mutmut ----------------------------------------------------------------------------


def _patch_mutmut_for_a_src_package() -> None:
    """Let mutmut 3 test a project whose top-level package is *named* `src`.

    mutmut assumes a src layout (`src/` a folder, not a package): it strips "src." from the
    dotted names of mutants and asserts that no function it traces lives in a module whose
    name starts with "src." (mutmut issue #373). Here `src` is the package, so the names must
    keep it, or no mutant would ever be switched on. Both changes only keep "src.".
    """
    from mutmut.configuration import config
    from mutmut.mutation import trampoline
    from mutmut.state import state
    from mutmut.utils import format_utils

    strip_prefix = format_utils.strip_prefix

    def keep_src(s: str, *, prefix: str, strict: bool = False) -> str:
        return s if prefix == "src." else strip_prefix(s, prefix=prefix, strict=strict)

    def record_trampoline_hit(name: str, caller: str | None = None) -> None:
        # mutmut.stats.record_trampoline_hit without the assertion (max_stack_depth unset)
        state()._stats.add(name)
        if caller is not None and config().track_dependencies:
            state().function_dependencies[name].add(caller)

    if config().max_stack_depth != -1:
        raise SystemExit("scripts/mutation.py does not support mutmut's max_stack_depth")
    format_utils.strip_prefix = keep_src  # type: ignore[assignment]
    trampoline.record_trampoline_hit = record_trampoline_hit  # type: ignore[assignment]


def mutmut_main(argv: list[str]) -> None:
    """Run mutmut's command line in this process, patched (see above)."""
    import queue  # noqa: F401  before mutmut puts mutants/src on sys.path, where src/queue is

    _patch_mutmut_for_a_src_package()
    from mutmut import __main__ as mutmut_cli

    if argv == ["generate"]:  # the first steps of `mutmut run`: the mutants, without running them
        mutmut_cli.makedirs(MUTANTS.name, exist_ok=True)
        mutmut_cli.copy_src_dir()
        mutmut_cli.copy_also_copy_files()
        mutmut_cli.setup_source_paths()
        mutmut_cli.create_mutants(2)
        return
    mutmut_cli.cli(argv)


def _mutmut(*args: str) -> int:
    command = [sys.executable, "-m", "scripts.mutation", "--mutmut", *args]
    return subprocess.run(command, cwd=ROOT, check=False).returncode


# ---- reading the results -----------------------------------------------------------------------


@dataclass
class Mutant:
    name: str
    module: str
    function: str
    status: str
    original: str
    mutated: str
    harmless: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.module, self.function, self.original, self.mutated)


def _meta(path: str) -> dict[str, Any]:
    meta_file = MUTANTS / f"{path}.meta"
    return json.loads(meta_file.read_text()) if meta_file.exists() else {"exit_code_by_key": {}}


def all_mutant_names() -> dict[str, str]:
    """Every mutant mutmut generated for the job core: name -> module path."""
    return {name: path for path in MODULES for name in _meta(path)["exit_code_by_key"]}


def _function_of(name: str) -> str:
    mangled = name.rpartition(".")[2].partition("__mutmut_")[0]  # x_func or xǁClassǁmethod
    return mangled.removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")


def _change(name: str, path: str) -> tuple[str, str]:
    """The changed lines of one mutant, original and mutated, each joined into one line."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=path).splitlines()[2:]  # past the ---/+++ header
    removed = [line[1:].strip() for line in diff if line.startswith("-")]
    added = [line[1:].strip() for line in diff if line.startswith("+")]
    return " / ".join(removed), " / ".join(added)


def collect(names: set[str] | None) -> list[Mutant]:
    """The mutants with a result (of `names` only, when given), in module order."""
    from mutmut.stats import status_by_exit_code

    mutants = []
    for path in MODULES:
        for name, code in _meta(path)["exit_code_by_key"].items():
            if code is None or (names is not None and name not in names):
                continue
            status = status_by_exit_code[code]
            original, mutated = _change(name, path) if status != "killed" else ("", "")
            mutants.append(Mutant(name, path, _function_of(name), status, original, mutated))
    return mutants


def load_harmless(path: Path = HARMLESS_FILE) -> dict[tuple[str, str, str, str], str]:
    """The hand-written verdicts: (module, function, original, mutated) -> why it is harmless."""
    if not path.exists():
        return {}
    entries = tomllib.loads(path.read_text())["harmless"]
    return {(e["module"], e["function"], e["original"], e["mutated"]): e["reason"] for e in entries}


# ---- the report --------------------------------------------------------------------------------


def summarise(mutants: list[Mutant], harmless: dict[tuple[str, str, str, str], str]) -> dict:
    """Per-module and total counts; the kill rate counts timeouts as detected (a mutant that
    makes the tests hang is caught), and "without the harmless" leaves out the survivors
    judged harmless (equivalent mutants: no test could tell them apart)."""
    for mutant in mutants:
        if mutant.status not in ("killed", "timeout"):
            mutant.harmless = harmless.get(mutant.key)

    def tally(group: list[Mutant]) -> dict[str, Any]:
        columns = Counter(COLUMN_OF.get(m.status, "other") for m in group)
        detected = columns["killed"] + columns["timeout"]
        total = len(group)
        n_harmless = sum(1 for m in group if m.harmless)
        return {
            "killed": columns["killed"],
            "survived": columns["survived"],
            "timeout": columns["timeout"],
            "no_tests": columns["no tests"],
            "other": columns["other"],
            "total": total,
            "harmless": n_harmless,
            "kill_rate": round(detected / total, 4) if total else None,
            "kill_rate_without_harmless": (
                round(detected / (total - n_harmless), 4) if total > n_harmless else None
            ),
        }

    modules = {
        path: {"name": label, **tally([m for m in mutants if m.module == path])}
        for path, label in MODULES.items()
    }
    return {"modules": modules, "total": tally(mutants)}


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.1f} %"


def _code(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`" if text else "(nothing)"


def render(run: dict[str, Any], summary: dict[str, Any], mutants: list[Mutant]) -> str:
    total = summary["total"]
    lines = [
        "# Mutation testing of the job core",
        "",
        "Do the fast unit tests notice when the job core's code is wrong? mutmut changes one",
        "thing at a time (an operator, a constant, an argument, a returned value) in the task",
        "records, retention, history, recovery and queue modules and runs the fast unit tests",
        "that reach the changed function; the change is *killed* when a test fails. Generated by",
        "`scripts/mutation.py` from the run below; survivors judged harmless are explained in",
        "`scripts/mutation_harmless.toml`.",
        "",
        f"- Date: {run['date']}",
        f"- Tool: mutmut {run['tool_version']} (pytest {run['pytest_version']}),"
        f" {run['max_children']} worker(s)",
        f"- Command: `{run['command']}`",
        f"- Scope: {run['scope']}",
        f"- Tests: {', '.join(run['tests'])} (not slow); each mutant runs only the tests that"
        " reach its function",
        f"- Run time: {run['run_time']}",
        "",
        "| module | file | killed | survived | timeout | no tests | other | total | kill rate"
        " | harmless survivors | kill rate without them |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(s["name"], f"`{path}`", s) for path, s in summary["modules"].items()]
    rows.append(("**total**", "", total))
    for label, path, s in rows:
        lines.append(
            f"| {label} | {path} | {s['killed']} | {s['survived']} | {s['timeout']}"
            f" | {s['no_tests']} | {s['other']} | {s['total']} | {_percent(s['kill_rate'])}"
            f" | {s['harmless']} | {_percent(s['kill_rate_without_harmless'])} |"
        )
    lines += [
        "",
        "Kill rate: (killed + timeout) / total; a mutant with no test reaching it counts as"
        " surviving, and so does one mutmut calls suspicious or a segfault (*other*: the test"
        f" run died of a signal). Target: {_percent(TARGET)} in all. *Harmless survivors* are"
        " those `scripts/mutation_harmless.toml` explains; the last column leaves them out.",
        "",
        "## How it runs",
        "",
        "- `uv run --frozen --no-sync python -m scripts.mutation --fresh` runs everything again"
        " (5-10 min on the shared 2-core box with 2 workers); `--sample N [--seed S]` tests a"
        " seeded random N; naming mutants (globs) tests those again; `--report-only` re-renders.",
        "- Not in CI: the full run is too long for it. Run it after changing one of the five"
        " modules or their tests, and judge new survivors (the script prints a ready"
        " `[[harmless]]` entry for each) or kill them with a test.",
        "- mutmut 3 assumes `src/` is a folder, not a package; here `src` *is* the package, so"
        " the script keeps the `src.` prefix of mutant names (mutmut issue #373) before handing"
        " over to mutmut's own command line.",
        "- Tests that ask about PID 1 are avoided on purpose: a mutant of `os.kill(pid, 0)`"
        " would send a real signal.",
        "",
        "## Surviving mutants",
        "",
    ]
    survivors = [m for m in mutants if m.status not in ("killed", "timeout")]
    if not survivors:
        lines.append("None.")
    else:
        lines += [
            "| module | function | original | mutant | status | why it is harmless |",
            "|---|---|---|---|---|---|",
        ]
        for m in survivors:
            why = m.harmless or "**not judged: a test should kill it**"
            lines.append(
                f"| {MODULES[m.module]} | `{m.function}` | {_code(m.original)}"
                f" | {_code(m.mutated)} | {m.status} | {why} |"
            )
    return "\n".join(lines) + "\n"


def write_report(names: set[str] | None, run: dict[str, Any]) -> dict[str, Any]:
    mutants = collect(names)
    harmless = load_harmless()
    summary = summarise(mutants, harmless)
    survivors = [asdict(m) for m in mutants if m.status not in ("killed", "timeout")]
    REPORT_JSON.write_text(
        json.dumps({**run, **summary, "survivors": survivors}, indent=2, ensure_ascii=False) + "\n"
    )
    REPORT_MD.write_text(render(run, summary, mutants))
    unjudged = [m for m in mutants if m.status not in ("killed", "timeout") and not m.harmless]
    if names is None:  # a full result: entries no survivor matches any more are out of date
        survivor_keys = {m.key for m in mutants if m.status not in ("killed", "timeout")}
        for module, function, _original, mutated in sorted(set(harmless) - survivor_keys):
            print(f"stale entry in {HARMLESS_FILE.name}: {module} {function}: {mutated}")
    for m in unjudged:  # ready to judge: paste into scripts/mutation_harmless.toml
        print(
            f"[[harmless]]\nmodule = {json.dumps(m.module)}\nfunction = {json.dumps(m.function)}"
            f"\noriginal = {json.dumps(m.original, ensure_ascii=False)}"
            f"\nmutated = {json.dumps(m.mutated, ensure_ascii=False)}"
            f'\nreason = ""  # {m.name}: {m.status}\n'
        )
    return summary


# ---- the command line --------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--mutmut"]:
        mutmut_main(args[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mutants", nargs="*", help="test these again (mutmut names or globs)")
    parser.add_argument("--sample", type=int, metavar="N", help="test a random N mutants only")
    parser.add_argument("--seed", type=int, default=15, help="seed of the sample (default 15)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results first")
    parser.add_argument("--report-only", action="store_true", help="only re-render the report")
    parser.add_argument("--min-rate", type=float, default=0.0, help="fail below this kill rate")
    opts = parser.parse_args(args)

    if opts.report_only:
        if not LAST_RUN.exists():
            parser.error("no run to report on: run the mutation tests first")
        run = json.loads(LAST_RUN.read_text())
        sample = run.pop("sample_names", None)
    else:
        if opts.fresh and MUTANTS.exists():
            subprocess.run(["rm", "-rf", str(MUTANTS)], check=True)
        command = ["python", "-m", "scripts.mutation", *args]
        selection: list[str] = list(opts.mutants)
        sample = None
        scope = "every mutant of the five modules"
        if opts.mutants:
            scope = f"earlier results, with {', '.join(opts.mutants)} tested again"
        if opts.sample:
            if _mutmut("generate") != 0:
                return 1
            names = sorted(all_mutant_names())
            sample = sorted(random.Random(opts.seed).sample(names, min(opts.sample, len(names))))
            selection = sample
            scope = (
                f"a random sample of {len(sample)} of the {len(names)} mutants (seed {opts.seed})"
            )
        started = time.monotonic()
        code = _mutmut("run", "--max-children", str(opts.jobs), *selection)
        if code != 0:
            print(f"mutmut exited with {code}", file=sys.stderr)
            return code
        run = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "tool": "mutmut",
            "tool_version": version("mutmut"),
            "pytest_version": version("pytest"),
            "max_children": opts.jobs,
            "command": " ".join(command),
            "scope": scope,
            "tests": tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"][
                "pytest_add_cli_args_test_selection"
            ],
            "run_time": _duration(time.monotonic() - started),
        }
        LAST_RUN.write_text(json.dumps({**run, "sample_names": sample}, indent=2))
    summary = write_report(set(sample) if sample else None, run)
    rate = summary["total"]["kill_rate"] or 0.0
    print(f"kill rate {_percent(rate)}; report in {REPORT_MD.relative_to(ROOT)}")
    return 1 if rate < opts.min_rate else 0


if __name__ == "__main__":
    sys.exit(main())
