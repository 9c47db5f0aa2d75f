"""The code in README.md and docs/*.md runs as written.

Every ```python block of a page runs, in the order of the page, in one namespace per page and
in a temporary working directory. A ```text output block that directly follows a python
block is that block's expected printout: each of its non-blank lines must appear, in the same
order, among the lines the block printed (trailing spaces ignored; printed lines that the
page does not show are allowed). A python block that prints must be followed by one. Other blocks (```bash, ```text) do not run; the commands in
the ```bash blocks must name existing ``melius-larq`` verbs, modules, files and make targets.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXPECTED_PAGES = {"bnnplus", "benchmarks", "cbd", "deployment", "fine_tuning", "installation",
                  "models", "training"}  # fmt: skip
# Info strings a fence may carry: anything else (```py, ```sh, a bare ```) is an error, so a
# block cannot silently escape the test by its spelling.
LANGUAGES = {"python", "text", "text output", "bash"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def _blocks(page: Path) -> list[tuple[str, str, int]]:
    """``(info, code, first line number of the code)`` for every fenced block of a page."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start(2)) + 1
        blocks.append((match.group(1).strip(), match.group(2), line))
    fences = sum(1 for ln in text.splitlines() if ln.startswith("```"))
    assert fences == 2 * len(blocks), f"{page.name}: unbalanced ``` fences"
    return blocks


def _check_printout(page: Path, line: int, expected: str, printed: str) -> None:
    got = [ln.rstrip() for ln in printed.splitlines()]
    position = 0
    for want in (ln.rstrip() for ln in expected.splitlines()):
        if not want:
            continue
        try:
            position = got.index(want, position) + 1
        except ValueError:
            pytest.fail(
                f"{page.name}:{line}: the printout lacks the line (in this order)\n  {want!r}\n"
                f"printed:\n{printed}"
            )


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_code_runs(page, tmp_path, monkeypatch):
    blocks = _blocks(page)
    for info, _, line in blocks:
        assert info in LANGUAGES, f"{page.name}:{line}: fence ```{info} (use one of {LANGUAGES})"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    previous = None
    for index, (info, code, line) in enumerate(blocks):
        if info == "python":
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                # Leading newlines keep tracebacks on the page's own line numbers.
                exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
            print(printed.getvalue(), end="")  # shown by pytest when a later check fails
            previous = printed.getvalue()
            following = blocks[index + 1][0] if index + 1 < len(blocks) else None
            assert not previous.strip() or following == "text output", (
                f"{page.name}:{line}: the block prints, but no ```text output block follows "
                "to check what it prints"
            )
        elif info == "text output":
            assert previous is not None, (
                f"{page.name}:{line}: a ```text output block must follow a ```python block"
            )
            _check_printout(page, line, code, previous)
            previous = None
        else:
            previous = None


def test_docs_pages_exist_and_are_linked():
    assert {p.stem for p in PAGES[1:]} >= EXPECTED_PAGES
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
    assert any(info == "python" for info, _, _ in _blocks(ROOT / "README.md"))


def _cli_verbs() -> set[str]:
    """The sub-commands listed by ``python -m melius_larq --help``."""
    out = subprocess.run(
        [sys.executable, "-m", "melius_larq", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return set(re.findall(r"^ {4}([a-z][\w-]*)", out, flags=re.M))


def test_commands_in_docs_exist():
    commands = [
        (page, line + i, cmd.strip())
        for page in PAGES
        for info, code, line in _blocks(page)
        if info == "bash"
        for i, cmd in enumerate(code.splitlines())
        if cmd.strip() and not cmd.lstrip().startswith("#")
    ]
    assert commands
    verbs = _cli_verbs()
    assert {"list", "convert", "train", "compress"} <= verbs, verbs
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    problems = []
    for page, line, cmd in commands:
        where = f"{page.name}:{line}: {cmd}"
        for verb in re.findall(r"(?:melius-larq|-m melius_larq)\s+([\w-]+)", cmd):
            if verb not in verbs:
                problems.append(f"{where}\n    unknown command {verb!r}")
        for module in re.findall(r"-m (melius_larq\.[\w.]+)", cmd):
            if importlib.util.find_spec(module) is None:
                problems.append(f"{where}\n    no module {module}")
        for script in re.findall(r"python3? ([\w/]+\.py)\b", cmd):
            if not (ROOT / script).is_file():
                problems.append(f"{where}\n    no file {script}")
        for target in re.findall(r"\bmake ([\w-]+)", cmd):
            if target not in targets:
                problems.append(f"{where}\n    no make target {target}")
        if re.search(r"-m (zoo|deploy)\b|python -m melius_larq\.cli\b", cmd):
            problems.append(f"{where}\n    use the installed names (melius_larq.zoo, ...)")
    assert not problems, "\n".join(problems)


def test_fine_tuning_table_is_its_results_json():
    """The guide's table is the one ``melius_larq.zoo.experiments.fine_tuning`` writes from
    ``docs/fine_tuning/results.json``, unedited."""
    import json

    from melius_larq.zoo.experiments.fine_tuning import markdown

    result = json.loads((ROOT / "docs" / "fine_tuning" / "results.json").read_text())
    table = markdown(result)
    assert (ROOT / "docs" / "fine_tuning" / "results.md").read_text() == table
    assert table in (ROOT / "docs" / "fine_tuning.md").read_text()
    # the README quotes the same runs
    arms = result["arms"]
    quoted = " ".join((ROOT / "README.md").read_text().split())
    for arm in ("fine_tuned", "from_scratch"):
        mean, std = 100 * arms[arm]["test_mean"], 100 * arms[arm]["test_std"]
        assert f"{mean:.2f} ± {std:.2f} %" in quoted, arm
    assert f"p = {result['gain']['p']:.3f}" in quoted


def _tables(markdown: str) -> list[str]:
    """The tables of a Markdown text: runs of consecutive lines that start with ``|``."""
    tables, current = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


def test_benchmark_tables_are_one_make_bench_run():
    """docs/benchmarks.md shows the tables ``make bench`` wrote from
    ``docs/benchmarks/bench.json`` and the summary of the stored head-to-head runs, unedited;
    the README quotes that summary's ranges."""
    import json

    from melius_larq.deploy.suite import (
        format_head_to_head_runs,
        format_suite,
        summarize_head_to_head,
    )

    result = json.loads((ROOT / "docs" / "benchmarks" / "bench.json").read_text())
    md = format_suite(result)
    assert (ROOT / "docs" / "benchmarks" / "bench.md").read_text() == md + "\n"
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    for table in _tables(md):
        assert table in page, f"docs/benchmarks.md lacks the table\n{table}"
    summary = summarize_head_to_head(ROOT / "docs" / "benchmarks" / "head_to_head")
    assert len(summary["runs"]) >= 3
    for name in summary["runs"]:  # each run's own tables, as that run wrote them
        path = ROOT / "docs" / "benchmarks" / "head_to_head" / name
        run_md = path.with_suffix(".md").read_text()
        assert run_md == format_suite(json.loads(path.read_text())) + "\n", name
    runs_md = format_head_to_head_runs(summary)
    assert (ROOT / "docs" / "benchmarks" / "head_to_head" / "head_to_head.md").read_text() == (
        runs_md + "\n"
    )
    assert runs_md in page
    readme = " ".join((ROOT / "README.md").read_text().split())
    for name in ("melius_larq MeliusNet22", "melius_larq MeliusNet22 + XNNPACK",
                 "melius_larq MeliusNet22, int8 non-binary layers + XNNPACK"):  # fmt: skip
        row = summary["rows"][name]
        assert f"{row['min']:.2f}–{row['max']:.2f}x" in readme, name
    size = next(s for s in result["sizes"] if s["model"] == "melius_larq MeliusNet22")
    assert f"{size['int8_tflite_mib']:.2f} MiB (floor {size['floor8_mib']:.2f} MiB" in readme


def test_demo_numbers_are_its_report():
    """docs/training.md shows the table ``make demo`` wrote into docs/demo, and the README
    quotes the same report."""
    import json

    report = json.loads((ROOT / "docs" / "demo" / "report.json").read_text())
    table = (ROOT / "docs" / "demo" / "report.md").read_text().rstrip("\n")
    assert _tables(table)[0] in (ROOT / "docs" / "training.md").read_text()
    readme = " ".join((ROOT / "README.md").read_text().split())
    quoted = [
        f"{100 * report['test_accuracy']:.2f} % test top-1",
        f"{100 * report['lce_test_accuracy']:.2f} % in LCE",
        f"{100 * report['lce_top1_agreement']:.0f} % top-1 agreement",
        f"{100 * report['lce_int8_test_accuracy']:.2f} % with int8",
        f"float TFLite {report['float_tflite_mib']:.3f} MiB, LCE {report['lce_mib']:.3f} MiB, "
        f"LCE int8 {report['lce_int8_mib']:.3f} MiB",
        f"{report['float_tflite_ms']:.3f} ms (float TFLite), {report['lce_ms']:.3f} ms (LCE), "
        f"{report['lce_int8_ms']:.3f} ms (LCE int8)",
        f"{report['speedup_vs_float']:.2f}x faster than float TFLite",
        f"({report['total_seconds'] / 60:.1f} min from training to report",
    ]
    for text in quoted:
        assert text in readme, f"README.md does not quote {text!r} from docs/demo/report.json"
