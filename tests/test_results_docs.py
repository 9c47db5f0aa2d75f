"""The results tables on the docs pages are their experiments' committed results, unedited.

Every results file ``X.json`` under docs/ that has an ``X.md`` beside it is listed in
:data:`RESULTS` with the function that wrote ``X.md`` from it. For each one:

* the function, run on the committed ``X.json``, returns the committed ``X.md`` exactly (the
  writers write its return value as it is), so no number of ``X.md`` was edited by hand or
  left behind by a rerun;
* each table of that Markdown (a run of consecutive lines starting with ``|``) that
  :data:`RESULTS` says a page shows is a table of that page, verbatim: same lines, none added.

A number a page quotes in its own words from a results JSON is listed in :data:`QUOTES`, with
the words around it: the page must say exactly those words with the JSON's value. Tables a page
writes in its own words (summaries across several results files, for example) are not checked
here. Nothing trains or builds a model: the test only imports the formatters.
"""

from __future__ import annotations

import difflib
import importlib
import json
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


class Result(NamedTuple):
    json: str  # the results JSON, relative to docs/; its Markdown is the same path with .md
    formatter: str  # "module:function" that wrote the .md from the JSON
    pages: dict[str, tuple[int, ...]]  # page (relative to the repository) -> its tables (0-based)

    @property
    def md(self) -> str:
        return self.json.removesuffix(".json") + ".md"


SWEEP = "melius_larq.zoo.sweep:_markdown"
# An entry without pages is shown on no page verbatim: docs/cbd.md summarises cbd_results in
# its own tables, and docs/bnnplus.md combines
# the sweeps (several results files per table, with the t-tests of their .md's text).
RESULTS = [
    Result("meliusnet_vs_mobilenet/meliusnet_vs_mobilenet.json",
           "melius_larq.zoo.experiments.meliusnet_vs_mobilenet.report:markdown",
           {"docs/models.md": (0, 2)}),
    Result("bnnplus_results/bnnplus_experiment.json",
           "melius_larq.zoo.experiments.bnnplus.report:markdown",
           {"docs/bnnplus.md": (0, 1, 2)}),
    Result("cbd_results/results.json", "melius_larq.zoo.experiments.cbd.report:markdown", {}),
    Result("int8_ablation/results.json", "melius_larq.zoo.experiments.int8_ablation:markdown",
           {"docs/deployment.md": (0, 1)}),
    Result("fine_tuning/results.json", "melius_larq.zoo.experiments.fine_tuning:markdown",
           {"docs/fine_tuning.md": (0,)}),
    Result("demo_sweep/lr_sweep.json", SWEEP, {"docs/training.md": (0,)}),
    Result("demo_sweep/seeds.json", SWEEP, {"docs/training.md": (0,)}),
    Result("distillation/kd.json", SWEEP, {"docs/training.md": (0,)}),
    *(Result(f"bnnplus_results/sweeps/{name}.json", SWEEP, {}) for name in (
        "binarynet_15ep_default_vs_bnn_seeds4-6",
        "binarynet_15ep_default_vs_bnn_seeds4-9",
        "binarynet_15ep_default_vs_bnn_seeds7-9",
        "binarynet_15ep_leave_one_out_seeds4-6",
        "binarynet_3ep_default",
        "binarynet_3ep_default_without_regularizer",
        "binarynet_3ep_regularizer_alone_small_lambda",
        "meliusnettiny_4ep_default",
        "meliusnettiny_4ep_default_without_regularizer",
    )),
]  # fmt: skip
IDS = [r.json.removesuffix(".json") for r in RESULTS]


def _regenerate(result: Result) -> str:
    module, function = result.formatter.split(":")
    formatter = getattr(importlib.import_module(module), function)
    return formatter(json.loads((DOCS / result.json).read_text()))


def _tables(markdown: str) -> list[tuple[int, str]]:
    """``(first line number, table)`` for every run of consecutive lines starting with ``|``."""
    tables, current, start = [], [], 0
    for number, line in enumerate([*markdown.splitlines(), ""], start=1):
        if line.startswith("|"):
            if not current:
                start = number
            current.append(line)
        elif current:
            tables.append((start, "\n".join(current)))
            current = []
    return tables


def test_every_results_markdown_is_listed():
    """A new results directory cannot escape the checks below."""
    written = {
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.json")
        if p.with_suffix(".md").is_file() and p.parent != DOCS
    }
    listed = {r.json for r in RESULTS}
    # docs/benchmarks and docs/demo are tests/test_docs.py's (make bench, make demo)
    written = {j for j in written if j.split("/")[0] not in ("benchmarks", "demo")}
    assert written <= listed, f"results files missing from RESULTS: {sorted(written - listed)}"
    assert all((DOCS / j).is_file() for j in listed)


@pytest.mark.parametrize("result", RESULTS, ids=IDS)
def test_results_markdown_is_its_json(result):
    committed = (DOCS / result.md).read_text()
    regenerated = _regenerate(result)
    if committed != regenerated:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(True), regenerated.splitlines(True),
                f"docs/{result.md} (committed)", f"{result.formatter}(docs/{result.json})",
            )
        )  # fmt: skip
        pytest.fail(f"docs/{result.md} is not what its formatter writes from its JSON:\n{diff}")


SHOWN = [r for r in RESULTS if r.pages]


@pytest.mark.parametrize("result", SHOWN, ids=[r.json.removesuffix(".json") for r in SHOWN])
def test_pages_show_the_results_tables(result):
    tables = [table for _, table in _tables(_regenerate(result))]
    problems = []
    for page, indices in result.pages.items():
        text = (ROOT / page).read_text()
        assert max(indices) < len(tables), f"docs/{result.md} has {len(tables)} tables"
        page_tables = _tables(text)
        for index in indices:
            table = tables[index]
            if table in {shown for _, shown in page_tables}:  # the whole table, no row added
                continue
            # the page's table most like it, to show what differs
            line, closest = max(
                page_tables,
                key=lambda t: difflib.SequenceMatcher(None, t[1], table).ratio(),
                default=(0, ""),
            )
            diff = "".join(
                difflib.unified_diff(
                    f"{closest}\n".splitlines(True), f"{table}\n".splitlines(True),
                    f"{page} (table at line {line})", f"docs/{result.md} (table {index})",
                )
            )  # fmt: skip
            problems.append(f"{page} lacks table {index} of docs/{result.md}:\n{diff}")
    assert not problems, "\n".join(problems)


class Quote(NamedTuple):
    """Numbers a page quotes in its own words from a results JSON."""

    page: str  # relative to the repository
    json: str  # relative to docs/
    words: str  # the page's words around the numbers, "{}" where each stands
    values: tuple  # per "{}": (path, format spec, scale); see _value for paths


def _quote(page, json_path, words, *values):
    return Quote(page, json_path, words, values)


PCT = 100  # an accuracy quoted in percent
CBD_RESNET = ("networks", ("network", "resnet18"))
CBD_TIME = "cbd_results/compression_time/bench_cbd.json"
VERIFY = "verify_bnnplus/{}.json"
QUOTES = [
    _quote("docs/cbd.md", "cbd_results/results.json", "reaches {} % validation",
           ((*CBD_RESNET, "training", "val_accuracy"), ".2f", PCT)),
    _quote("docs/cbd.md", "cbd_results/results.json", "**{} % test** top-1",
           ((*CBD_RESNET, "float", "test_accuracy"), ".2f", PCT)),
    _quote("docs/cbd.md", "cbd_results/results.json", "its 15 epochs took {} s",
           ((*CBD_RESNET, "training", "train_seconds"), ",.0f", 1)),
    _quote("docs/cbd.md", CBD_TIME, "224×224×3 input, {} parameters", (("params",), ",", 1)),
    _quote("docs/cbd.md", CBD_TIME, "kernels holding {} weights",
           (("compressed_weights",), ",", 1)),
    _quote("docs/cbd.md", CBD_TIME, "`compress_model` took **{} s**", (("seconds",), ".1f", 1)),
    _quote("docs/deployment.md", "int8_ablation/results.json",
           "6,000 validation images, float top-1 {} %", (("float_val_accuracy",), ".2f", PCT)),
    *(_quote("docs/deployment.md", VERIFY.format(name), f"| {label} | {{}} % | {{}} % | {{}} % | {{}} |",
             (("keras_accuracy",), ".2f", PCT), (("accuracy",), ".2f", PCT),
             (("top1_agreement",), ".2f", PCT), (("max_rel_diff",), ".3f", 1))
      for name, label in (("bnn_plus", "BNN+"), ("ste", "STE"))),
    _quote("docs/bnnplus.md", "bnnplus_results/bnnplus_experiment.json",
           "at λ = 0.3 per weight {} % of the weights",
           (("step1", "arms", "Manhattan λ=0.3", "runs", 0, "history", "near_alpha_fraction", 2),
            ".0f", PCT)),
]  # fmt: skip


def _value(data, path: tuple):
    for key in path:
        if isinstance(key, tuple):
            field, wanted = key
            data = next(item for item in data if item.get(field) == wanted)
        else:
            data = data[key]
    return data


@pytest.mark.parametrize("quote", QUOTES, ids=[f"{q.page}:{q.words}" for q in QUOTES])
def test_quoted_numbers_are_their_results(quote):
    data = json.loads((DOCS / quote.json).read_text())
    numbers = []
    for path, spec, scale in quote.values:
        value = _value(data, path)
        value = value * scale if scale != 1 else value  # counts stay integers
        numbers.append(format(value, spec))
    want = quote.words.format(*numbers)
    page = " ".join((ROOT / quote.page).read_text().split())  # line breaks as spaces
    assert want in page, f"{quote.page} should say {want!r} (docs/{quote.json})"
