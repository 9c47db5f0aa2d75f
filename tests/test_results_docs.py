"""The results tables on the docs pages are their experiments' committed results, unedited.

Every results file ``X.json`` under docs/ that has an ``X.md`` beside it is listed in
:data:`RESULTS` with the function that wrote ``X.md`` from it. For each one:

* the function, run on the committed ``X.json``, returns the committed ``X.md`` exactly (the
  writers write its return value as it is), so no number of ``X.md`` was edited by hand or
  left behind by a rerun;
* each table of that Markdown (a run of consecutive lines starting with ``|``) that
  :data:`RESULTS` says a page shows is a table of that page, verbatim: same lines, none added.

A number a page quotes in its own words from a results JSON is listed in :data:`QUOTES`, with
the words around it: the page must say exactly those words with the JSON's value. A number a
page takes from a results Markdown (a mean ± std, a table cell) is listed in
:data:`SHOWN_NUMBERS`: the page's words and the Markdown's words around it must both be there. Tables a page
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
    _quote("README.md", "meliusnet_vs_mobilenet/meliusnet_vs_mobilenet.json",
           "MeliusNetTinyWide is {} points above the float MobileNet at its size and {} at its OPS",
           (("matched", ("name", "MeliusNetTinyWide"), "difference_at_size_mib_paper"), ".1f", PCT),
           (("matched", ("name", "MeliusNetTinyWide"), "difference_at_ops"), ".1f", PCT)),
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


class Shown(NamedTuple):
    """A number a page shows from a results Markdown (its JSON's, checked above)."""

    page: str  # relative to the repository
    md: str  # a results Markdown of RESULTS, relative to docs/
    words: str  # the page's words around the number
    number: str  # the number as both write it, e.g. "93.23 ± 0.13"
    md_words: str  # the Markdown's words around the number (a table row's cells)


SHOWN_NUMBERS = [
    Shown("README.md", "demo_sweep/seeds.md", "92.10 ± 0.04 % over seeds 0-2", "92.10 ± 0.04", "92.10 ± 0.04"),
    Shown("README.md", "distillation/kd.md", "93.23 ± 0.13 % test top-1 with a float ResNet-18", "93.23 ± 0.13", "93.23 ± 0.13"),
    Shown("README.md", "distillation/kd.md", "92.96 ± 0.22 % without", "92.96 ± 0.22", "92.96 ± 0.22"),
    Shown("README.md", "fine_tuning/results.md", "reaches 96.35 ± 0.26 % test top-1", "96.35 ± 0.26", "96.35 ± 0.26"),
    Shown("README.md", "fine_tuning/results.md", "against 95.34 ± 0.28 % from scratch", "95.34 ± 0.28", "95.34 ± 0.28"),
    Shown("README.md", "meliusnet_vs_mobilenet/meliusnet_vs_mobilenet.md", "MeliusNetTiny reaches 90.56 % against", "90.56", "| 91.12 ± 0.18 | 90.56 ± 0.28 | 0.220 |"),
    Shown("README.md", "meliusnet_vs_mobilenet/meliusnet_vs_mobilenet.md", "87.18 % for float MobileNet-v1 0.125", "87.18", "| 87.14 ± 0.50 | 87.18 ± 0.70 | 0.224 |"),
    Shown("README.md", "bnnplus_results/bnnplus_experiment.md", "90.76 ± 0.20 % against", "90.76 ± 0.20", "| α in forward | 91.12 ± 0.33 | 90.76 ± 0.20 |"),
    Shown("README.md", "bnnplus_results/bnnplus_experiment.md", "against 90.67 ± 0.16 % test top-1", "90.67 ± 0.16", "| BNN | 91.13 ± 0.39 | 90.67 ± 0.16 |"),
    Shown("README.md", "bnnplus_results/sweeps/binarynet_15ep_default_vs_bnn_seeds4-9.md", "91.01 ± 0.26 % against", "91.01 ± 0.26", "91.01 ± 0.26"),
    Shown("README.md", "bnnplus_results/sweeps/binarynet_15ep_default_vs_bnn_seeds4-9.md", "against 90.67 ± 0.19 % over 6 seeds", "90.67 ± 0.19", "90.67 ± 0.19"),
    Shown("README.md", "cbd_results/results.md", "on a small CNN (92.69 % test)", "92.69", "validation 92.72 %, test 92.69 %"),
    Shown("README.md", "cbd_results/results.md", "keeps 91.29 %", "91.29", "| CBD J=4, btn 0.05 | 4.086 | 91.98 | 91.29 |"),
    Shown("README.md", "cbd_results/results.md", "(4.14 bits) 90.53 %", "90.53", "| plain per-channel b=4 | 4.143 | 90.88 | 90.53 |"),
    Shown("README.md", "cbd_results/results.md", "on a ResNet-18 (94.29 %)", "94.29", "validation 94.82 %, test 94.29 %"),
    Shown("README.md", "cbd_results/results.md", "(94.11 % at 4.01 bits", "94.11", "| plain per-channel b=4 | 4.014 | 94.70 | 94.11 |"),
    Shown("README.md", "cbd_results/results.md", "against CBD's 92.43 % at 4.04", "92.43", "| CBD J=4, btn 0.02 | 4.037 | 92.95 | 92.43 |"),
]  # fmt: skip


@pytest.mark.parametrize("shown", SHOWN_NUMBERS, ids=[f"{s.page}:{s.words}" for s in SHOWN_NUMBERS])
def test_shown_numbers_are_in_their_results(shown):
    assert shown.md in {r.md for r in RESULTS}, f"docs/{shown.md} is not a checked results file"
    assert shown.number in shown.words and shown.number in shown.md_words, shown
    page = " ".join((ROOT / shown.page).read_text().split())
    assert shown.words in page, f"{shown.page} no longer says {shown.words!r}"
    md = " ".join((DOCS / shown.md).read_text().split())
    assert shown.md_words in md, f"docs/{shown.md} does not say {shown.md_words!r}"
