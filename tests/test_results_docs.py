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


BNN_EXP = "bnnplus_results/bnnplus_experiment.json"
BNN_SWEEP = "bnnplus_results/sweeps/{}.json"
LOO = BNN_SWEEP.format("binarynet_15ep_leave_one_out_seeds4-6")
SEEDS_4_9 = BNN_SWEEP.format("binarynet_15ep_default_vs_bnn_seeds4-9")
CBD = "cbd_results/results.json"
CBD_VGG = ("networks", ("network", "vgg"))
VGG_FINAL = (*CBD_VGG, "final")  # + ("label", ...): one final (Pareto-front) point
RESNET_FINAL = (*CBD_RESNET, "final")
RESNET_POINTS = (*CBD_RESNET, "points")  # every point, also those off the front
FINE_TUNING = "fine_tuning/results.json"
KD_TEACHER = ("configs", ("tag", "teacher=runs_kd_teacher_model.keras"))
KD_NONE = ("configs", ("tag", "teacher=none"))
ARM = ("step1", "arms")  # + arm name of step 1
NEAR_ALPHA = ("runs", 0, "history", "near_alpha_fraction", 2)  # after the 3rd (last) epoch


def _arm(name, *rest):
    return (*ARM, name, *rest)


def _vgg(label, field):
    return (*VGG_FINAL, ("label", label), field)


def _resnet(label, field, part="final"):
    return (*CBD_RESNET, part, ("label", label), field)


EXPERIMENT_QUOTES = [
    # ---------------------------------------------------------------- docs/bnnplus.md
    _quote("docs/bnnplus.md", BNN_EXP,
           "{} % with Manhattan λ = 0.3, {} % with λ = 3, {} % with λ = 30 and {} % with the full BNN+",
           (_arm("Manhattan λ=0.3", *NEAR_ALPHA), ".0f", PCT),
           (_arm("Manhattan λ=3", *NEAR_ALPHA), ".0f", PCT),
           (_arm("Manhattan λ=30", *NEAR_ALPHA), ".0f", PCT),
           (_arm("BNN+ (all)", *NEAR_ALPHA), ".0f", PCT)),
    _quote("docs/bnnplus.md", BNN_EXP,
           "(the pick) − BNN: {} points of test top-1, Welch's t = {}, p = {}.",
           (("step2", "claim", "test", "difference"), "+.2f", PCT),
           (("step2", "claim", "test", "t"), ".2f", 1),
           (("step2", "claim", "test", "p"), ".2f", 1)),
    _quote("docs/bnnplus.md", BNN_EXP, "− STE(1.3): {} points of test top-1, p = {}.",
           (("step3", "claim", "test", "difference"), "+.2f", PCT),
           (("step3", "claim", "test", "p"), ".2f", 1)),
    _quote("docs/bnnplus.md", BNN_EXP, "(+0.47 with one seed, {} with three)",
           (("step2", "claim", "test", "difference"), "+.2f", PCT)),
    _quote("docs/bnnplus.md", SEEDS_4_9,
           "Validation top-1 over seeds {}-{}: {} ± {} % (BNN) and {} ± {} % (the default).",
           (("seeds", 0), "d", 1), (("seeds", -1), "d", 1),
           (("configs", ("tag", "binarization=ste"), "val_mean"), ".2f", PCT),
           (("configs", ("tag", "binarization=ste"), "val_std"), ".2f", PCT),
           (("configs", ("tag", "binarization=bnn+"), "val_mean"), ".2f", PCT),
           (("configs", ("tag", "binarization=bnn+"), "val_std"), ".2f", PCT)),
    _quote("docs/bnnplus.md", LOO, "one standard deviation of the default ({} points)",
           (("configs", ("tag", "binarization=bnn+"), "test_std"), ".2f", PCT)),
    _quote("docs/bnnplus.md", LOO, "takes the default back to BNN ({} against {} %)",
           (("configs", ("tag", "binarization=bnn+_bnn_activation=ste"), "test_mean"), ".2f", PCT),
           (("configs", ("tag", "binarization=ste"), "test_mean"), ".2f", PCT)),
    _quote("docs/bnnplus.md", LOO, "just under the bar of {})",
           (("configs", ("tag", "binarization=bnn+"), "test_std"), ".3f", PCT)),
    _quote("docs/bnnplus.md", LOO, "highest of all arms ({} ± {} % against {} ± {} %)",
           (("configs", ("tag", "binarization=bnn+_bnn_regularizer=none"), "val_mean"), ".2f", PCT),
           (("configs", ("tag", "binarization=bnn+_bnn_regularizer=none"), "val_std"), ".2f", PCT),
           (("configs", ("tag", "binarization=bnn+"), "val_mean"), ".2f", PCT),
           (("configs", ("tag", "binarization=bnn+"), "val_std"), ".2f", PCT)),
    # settings the results record (budgets, seeds, grid values)
    _quote("docs/bnnplus.md", BNN_EXP, "one seed ({}), {} epochs: SignSwish activations at β = {}, {}, {};",
           (("step1", "seeds", 0), "d", 1), (("step1", "epochs"), "d", 1),
           (_arm("SignSwish β=2", "overrides", "bnn_beta"), "g", 1),
           (_arm("SignSwish β=5", "overrides", "bnn_beta"), "g", 1),
           (_arm("SignSwish β=10", "overrides", "bnn_beta"), "g", 1)),
    _quote("docs/bnnplus.md", BNN_EXP, "not in the forward pass) at λ = {}, {}, {};",
           (_arm("Manhattan λ=0.3", "overrides", "bnn_lambda"), "g", 1),
           (_arm("Manhattan λ=3", "overrides", "bnn_lambda"), "g", 1),
           (_arm("Manhattan λ=30", "overrides", "bnn_lambda"), "g", 1)),
    _quote("docs/bnnplus.md", BNN_EXP, "BNN against the pick, seeds {}, {}, {}, {} epochs:",
           (("step2", "seeds", 0), "d", 1), (("step2", "seeds", 1), "d", 1),
           (("step2", "seeds", 2), "d", 1), (("step2", "epochs"), "d", 1)),
    _quote("docs/bnnplus.md", BNN_EXP, "seeds {}, {}, {}, {} epochs (the `make demo` recipe)",
           (("step3", "seeds", 0), "d", 1), (("step3", "seeds", 1), "d", 1),
           (("step3", "seeds", 2), "d", 1), (("step3", "epochs"), "d", 1)),
    _quote("docs/bnnplus.md", BNN_EXP, "(BinaryNetSmall, {} epochs, seed {}; each change alone",
           (("step1", "epochs"), "d", 1), (("step1", "seeds", 0), "d", 1)),
    _quote("docs/bnnplus.md", BNN_EXP, "(BinaryNetSmall, {} epochs, seeds {}-{}; test top-1 reported once)",
           (("step2", "epochs"), "d", 1), (("step2", "seeds", 0), "d", 1),
           (("step2", "seeds", -1), "d", 1)),
    _quote("docs/bnnplus.md", BNN_EXP, "(MeliusNetTiny, {} epochs, seeds {}-{}; STE is",
           (("step3", "epochs"), "d", 1), (("step3", "seeds", 0), "d", 1),
           (("step3", "seeds", -1), "d", 1)),
    _quote("docs/bnnplus.md", BNN_SWEEP.format("binarynet_15ep_default_vs_bnn_seeds4-6"),
           "seeds {}-{} are the test", (("seeds", 0), "d", 1), (("seeds", -1), "d", 1)),
    _quote("docs/bnnplus.md", BNN_SWEEP.format("binarynet_15ep_default_vs_bnn_seeds7-9"),
           "seeds {}-{} a replication", (("seeds", 0), "d", 1), (("seeds", -1), "d", 1)),
    _quote("docs/bnnplus.md", BNN_SWEEP.format("binarynet_3ep_regularizer_alone_small_lambda"),
           "a further sweep down to {}, the default", (("grid", "bnn_lambda", 0), "s", 1)),
    # ---------------------------------------------------------------- docs/cbd.md
    # the small CNN
    _quote("docs/cbd.md", CBD,
           "{} kernel weights) trained for {} epochs reaches {} % validation and {} % test top-1",
           ((*CBD_VGG, "kernel_weights"), ",", 1),
           ((*CBD_VGG, "training", "budget", "epochs"), "d", 1),
           ((*CBD_VGG, "float", "val_accuracy"), ".2f", PCT),
           ((*CBD_VGG, "float", "test_accuracy"), ".2f", PCT)),
    _quote("docs/cbd.md", CBD,
           "CBD J=4 at bottleneck 0.05 ({} bits) has {} % against {} % for plain b=4 ({} bits)",
           (_vgg("CBD J=4, btn 0.05", "bits_per_weight_all"), ".2f", 1),
           (_vgg("CBD J=4, btn 0.05", "val_accuracy"), ".2f", PCT),
           (_vgg("plain per-channel b=4", "val_accuracy"), ".2f", PCT),
           (_vgg("plain per-channel b=4", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "CBD J=5 at 0.05 ({} bits) has {} % against {} % for b=5 ({} bits)",
           (_vgg("CBD J=5, btn 0.05", "bits_per_weight_all"), ".2f", 1),
           (_vgg("CBD J=5, btn 0.05", "val_accuracy"), ".2f", PCT),
           (_vgg("plain per-channel b=5", "val_accuracy"), ".2f", PCT),
           (_vgg("plain per-channel b=5", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "CBD J=4/0.05 loses {} pp at {} bits where plain b=4 loses {} pp at {} bits",
           (_vgg("CBD J=4, btn 0.05", "test_drop_pp"), ".2f", 1),
           (_vgg("CBD J=4, btn 0.05", "bits_per_weight_all"), ".2f", 1),
           (_vgg("plain per-channel b=4", "test_drop_pp"), ".2f", 1),
           (_vgg("plain per-channel b=4", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "No point reaches {} bits with at most {} pp lost; the first points",
           (("reference", "bits_per_weight"), ".0f", 1), (("reference", "test_drop_pp"), ".1f", 1)),
    _quote("docs/cbd.md", CBD, "CBD J=5 at {} bits ({} pp) and plain b=6 at {} bits ({} pp)",
           (_vgg("CBD J=5, btn 0.05", "bits_per_weight_all"), ".2f", 1),
           (_vgg("CBD J=5, btn 0.05", "test_drop_pp"), ".2f", 1),
           (_vgg("plain per-channel b=6", "bits_per_weight_all"), ".2f", 1),
           (_vgg("plain per-channel b=6", "test_drop_pp"), ".2f", 1)),
    _quote("docs/cbd.md", CBD,
           "CBD J=3 at bottleneck 0.2 ({} bits) has {} % validation against {} % for plain b=3 at {} bits",
           (_vgg("CBD J=3, btn 0.2", "bits_per_weight_all"), ".2f", 1),
           (_vgg("CBD J=3, btn 0.2", "val_accuracy"), ".2f", PCT),
           (_vgg("plain per-channel b=3", "val_accuracy"), ".2f", PCT),
           (_vgg("plain per-channel b=3", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "plain rounding drops to {} % validation at 3 bits and {} % at 4 bits",
           (_vgg("plain per-layer b=3", "val_accuracy"), ".2f", PCT),
           (_vgg("plain per-layer b=4", "val_accuracy"), ".2f", PCT)),
    _quote("docs/cbd.md", CBD, "gains {} to {} pp at {} to {} bits and {} to {} pp at 4 bits",
           ((*CBD_VGG, "comparison_per_layer_scale", ("cbd", "CBD J=3, btn 0.02"), "val_difference_pp"), "+.0f", 1),
           ((*CBD_VGG, "comparison_per_layer_scale", ("cbd", "CBD J=3, btn 0.2"), "val_difference_pp"), "+.0f", 1),
           ((*CBD_VGG, "comparison_per_layer_scale", ("cbd", "CBD J=3, btn 0.02"), "cbd_bits_per_weight_all"), ".2f", 1),
           ((*CBD_VGG, "comparison_per_layer_scale", ("cbd", "CBD J=3, btn 0.2"), "cbd_bits_per_weight_all"), ".2f", 1),
           ((*CBD_VGG, "comparison_per_layer_scale", ("cbd", "CBD J=4, btn 0.02"), "val_difference_pp"), "+.1f", 1),
           ((*CBD_VGG, "comparison_per_layer_scale", ("cbd", "CBD J=4, btn 0.05"), "val_difference_pp"), "+.1f", 1)),
    _quote("docs/cbd.md", CBD,
           "(`--cbd-channel-bits`) has {} % validation at {} bits, below plain per-channel rounding ({} % at {} bits)",
           (_vgg("CBD per-channel J=3, btn 0.02", "val_accuracy"), ".2f", PCT),
           (_vgg("CBD per-channel J=3, btn 0.02", "bits_per_weight_all"), ".2f", 1),
           (_vgg("plain per-channel b=3", "val_accuracy"), ".2f", PCT),
           (_vgg("plain per-channel b=3", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD,
           "{} % at {} bits, between plain per-channel rounding ({} % at {} bits) and CBD with its own per-layer scale ({} % at {} bits)",
           (_vgg("CBD per-channel J=4, btn 0.02", "val_accuracy"), ".2f", PCT),
           (_vgg("CBD per-channel J=4, btn 0.02", "bits_per_weight_all"), ".2f", 1),
           (_vgg("plain per-channel b=4", "val_accuracy"), ".2f", PCT),
           (_vgg("plain per-channel b=4", "bits_per_weight_all"), ".2f", 1),
           (_vgg("CBD J=4, btn 0.05", "val_accuracy"), ".2f", PCT),
           (_vgg("CBD J=4, btn 0.05", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "(one input channel, a {}x{} matrix)",
           ((*CBD_VGG, "points", 0, "layers", "conv1_1", "matrix_shape", 0), "d", 1),
           ((*CBD_VGG, "points", 0, "layers", "conv1_1", "matrix_shape", 1), "d", 1)),
    _quote("docs/cbd.md", CBD, "(all {} layers at `a = 1` up to bottleneck 0.2)",
           ((*CBD_VGG, "points", ("label", "CBD per-channel J=3, btn 0.2"), "layers_compressed"), "d", 1)),
    # the ResNet-18
    _quote("docs/cbd.md", CBD, "{}M parameters at width 1)",
           ((*CBD_RESNET, "params"), ".1f", 1e-6)),
    _quote("docs/cbd.md", CBD,
           "{} parameters, {} Conv2D/Dense kernels with {} weights) trained for {} epochs with the `resnet18_fashion_mnist`",
           ((*CBD_RESNET, "params"), ",", 1),
           (_resnet("CBD J=3, btn 0.02", "layers_compressed"), "d", 1),
           ((*CBD_RESNET, "kernel_weights"), ",", 1),
           ((*CBD_RESNET, "training", "budget", "epochs"), "d", 1)),
    _quote("docs/cbd.md", CBD, "{} to {} pp at {}-{} bits,",
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=3, btn 0.02"), "val_difference_pp"), ".1f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=3, btn 0.2"), "val_difference_pp"), ".1f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=3, btn 0.02"), "cbd_bits_per_weight_all"), ".1f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=3, btn 0.2"), "cbd_bits_per_weight_all"), ".1f", 1)),
    _quote("docs/cbd.md", CBD, "{} to {} pp at {}-{} bits, {} pp at {} bits, {} pp at {} bits; from 6",
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=4, btn 0.02"), "val_difference_pp"), ".2f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=4, btn 0.2"), "val_difference_pp"), ".2f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=4, btn 0.02"), "cbd_bits_per_weight_all"), ".1f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=4, btn 0.2"), "cbd_bits_per_weight_all"), ".1f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=4, btn 0.5"), "val_difference_pp"), ".2f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=4, btn 0.5"), "cbd_bits_per_weight_all"), ".2f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=5, btn 0.02"), "val_difference_pp"), ".2f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=5, btn 0.02"), "cbd_bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "the two are level ({} to {} pp, against plain b=4",
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=6, btn 0.05"), "val_difference_pp"), "+.2f", 1),
           ((*CBD_RESNET, "comparison", ("cbd", "CBD J=6, btn 0.5"), "val_difference_pp"), "+.2f", 1)),
    _quote("docs/cbd.md", CBD, "**No point reaches {} bits with at most {} pp lost.**",
           (("reference", "bits_per_weight"), ".1f", 1), (("reference", "test_drop_pp"), ".1f", 1)),
    _quote("docs/cbd.md", CBD, "Plain b=4 comes closest: {} pp at {} bits",
           (_resnet("plain per-channel b=4", "test_drop_pp"), ".2f", 1),
           (_resnet("plain per-channel b=4", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "with one scale per layer it loses {} pp at {} bits",
           (_resnet("plain per-layer b=4", "test_drop_pp"), ".2f", 1),
           (_resnet("plain per-layer b=4", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "is J=5 at bottleneck 0.02: {} pp at {} bits",
           (_resnet("CBD J=5, btn 0.02", "test_drop_pp"), ".2f", 1),
           (_resnet("CBD J=5, btn 0.02", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "(with per-channel scales: {} pp at {} bits)",
           (_resnet("CBD per-channel J=5, btn 0.02", "test_drop_pp"), ".2f", 1),
           (_resnet("CBD per-channel J=5, btn 0.02", "bits_per_weight_all"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "(validation top-1, bits/weight in brackets; float32 {} %)",
           ((*CBD_RESNET, "float", "val_accuracy"), ".2f", PCT)),
    # the indented table of the scale-granularity ablation (not checked as a table: _tables needs "|" in
    # column 0); values from "points", since not every cell is a front point
    *(_quote("docs/cbd.md", CBD, f"| {row} | {{}} % ({{}}) | {bold}{{}} %{bold} ({{}}) |",
             (_resnet(layer, "val_accuracy", "points"), ".2f", PCT),
             (_resnet(layer, "bits_per_weight_all", "points"), ".2f", 1),
             (_resnet(channel, "val_accuracy", "points"), ".2f", PCT),
             (_resnet(channel, "bits_per_weight_all", "points"), ".2f", 1))
      for row, layer, channel, bold in (
          ("plain rounding, b=3", "plain per-layer b=3", "plain per-channel b=3", "**"),
          ("CBD, J=3, bottleneck 0.02", "CBD J=3, btn 0.02", "CBD per-channel J=3, btn 0.02", ""),
          ("plain rounding, b=4", "plain per-layer b=4", "plain per-channel b=4", "**"),
          ("CBD, J=4, bottleneck 0.02", "CBD J=4, btn 0.02", "CBD per-channel J=4, btn 0.02", ""),
      )),
    _quote("docs/cbd.md", CBD, "CBD's grid adds {} pp at 3 bits",
           ((*CBD_RESNET, "comparison_per_layer_scale", ("cbd", "CBD J=3, btn 0.02"), "val_difference_pp"), "+.0f", 1)),
    _quote("docs/cbd.md", CBD,
           "it stays {} pp behind plain per-channel rounding at 3 bits and {} pp behind at 4 bits",
           ((*CBD_RESNET, "comparison_per_channel_cbd", ("cbd", "CBD per-channel J=3, btn 0.02"), "val_difference_pp"), ".1f", -1),
           ((*CBD_RESNET, "comparison_per_channel_cbd", ("cbd", "CBD per-channel J=4, btn 0.02"), "val_difference_pp"), ".1f", -1)),
    _quote("docs/cbd.md", CBD, "the search returns `a = 1` in all {} layers",
           (_resnet("CBD per-channel J=3, btn 0.02", "layers_compressed", "points"), "d", 1)),
    _quote("docs/cbd.md", CBD,
           "does engage ({} of {} layers) but costs almost a bit per weight ({} bits at J=3)",
           (_resnet("CBD per-channel J=3, btn 0.5", "layers_factoring_engaged", "points"), "d", 1),
           (_resnet("CBD per-channel J=3, btn 0.5", "layers_compressed", "points"), "d", 1),
           (_resnet("CBD per-channel J=3, btn 0.5", "bits_per_weight_all", "points"), ".2f", 1)),
    _quote("docs/cbd.md", CBD, "({} % validation). The same holds on the small CNN",
           (_resnet("CBD per-channel J=3, btn 0.5", "val_accuracy", "points"), ".2f", PCT)),
    _quote("docs/cbd.md", CBD, "rank {} of {} in the {}x{} stage-4 matrices",
           (_resnet("CBD J=3, btn 0.02", "layers", "points") + ("stage4_block1_conv2", "ranks", "0"), "d", 1),
           (_resnet("CBD J=3, btn 0.02", "layers", "points") + ("stage4_block1_conv2", "matrix_shape", 0), "d", 1),
           (_resnet("CBD J=3, btn 0.02", "layers", "points") + ("stage4_block1_conv2", "matrix_shape", 0), "d", 1),
           (_resnet("CBD J=3, btn 0.02", "layers", "points") + ("stage4_block1_conv2", "matrix_shape", 1), "d", 1)),
    # the smallest and largest a of the layers with a rank budget (the same at every J)
    _quote("docs/cbd.md", CBD, "to {}-{} of the largest weight at bottleneck 0.02 ({}-{} at 0.5)",
           (_resnet("CBD J=3, btn 0.02", "layers", "points") + ("stage4_block2_conv1", "a"), ".2f", 1),
           (_resnet("CBD J=3, btn 0.02", "layers", "points") + ("stage3_block1_proj", "a"), ".2f", 1),
           (_resnet("CBD J=3, btn 0.5", "layers", "points") + ("stage4_block2_conv2", "a"), ".2f", 1),
           (_resnet("CBD J=3, btn 0.5", "layers", "points") + ("stem_conv", "a"), ".2f", 1)),
    # settings: the sweep's grids
    _quote("docs/cbd.md", CBD,
           "J ∈ {{{}, …, {}}} and bottleneck ∈ {{{}, {}, {}, {}, {}}}, and plain rounding over b ∈ {{{}, …, {}}}",
           (("cbd_bits", 0), "d", 1), (("cbd_bits", -1), "d", 1),
           *((("bottlenecks", i), "g", 1) for i in range(5)),
           (("plain_bits", 0), "d", 1), (("plain_bits", -1), "d", 1)),
    # the compression-time benchmark
    _quote("docs/cbd.md", CBD_TIME, "random weights, {} Conv2D/Dense kernels holding",
           (("compressed_layers",), "d", 1)),
    _quote("docs/cbd.md", CBD_TIME, "with J={} and bottleneck {} (the setting of the authors' README). On {} cores,",
           (("bits",), "d", 1), (("bottleneck",), "g", 1), (("cpu_count",), "d", 1)),
    _quote("docs/cbd.md", CBD_TIME, "every layer ends near {} bits/weight",
           (("bits_per_weight",), ".0f", 1)),
    # ---------------------------------------------------------------- docs/fine_tuning.md
    _quote("docs/fine_tuning.md", FINE_TUNING,
           "{} training, {} validation, {} test images. Mean ± std over seeds {}, {}, {}.",
           (("target", "train_images"), "d", 1), (("target", "validation_images"), "d", 1),
           (("target", "test_images"), "d", 1),
           (("settings", "final_seeds", 0), "d", 1), (("settings", "final_seeds", 1), "d", 1),
           (("settings", "final_seeds", 2), "d", 1)),
    _quote("docs/fine_tuning.md", FINE_TUNING,
           "Gain of starting from weights: {} points of test top-1 (Welch's t = {}, two-sided p = {}).",
           (("gain", "difference"), "+.2f", PCT), (("gain", "t"), ".2f", 1), (("gain", "p"), ".3g", 1)),
    _quote("docs/fine_tuning.md", FINE_TUNING, "images: {} ± {} % against {} ± {} % from scratch",
           (("arms", "fine_tuned", "test_mean"), ".2f", PCT),
           (("arms", "fine_tuned", "test_std"), ".2f", PCT),
           (("arms", "from_scratch", "test_mean"), ".2f", PCT),
           (("arms", "from_scratch", "test_std"), ".2f", PCT)),
    _quote("docs/fine_tuning.md", FINE_TUNING, "6-class network itself reaches {} % test top-1",
           (("pretrain", "test_accuracy"), ".2f", PCT)),
    # settings the results record
    _quote("docs/fine_tuning.md", FINE_TUNING, "coat, sandal; {} epochs)",
           (("pretrain", "overrides", "epochs"), "d", 1)),
    _quote("docs/fine_tuning.md", FINE_TUNING, "and the {} Fashion-MNIST test images",
           (("target", "test_images"), ",", 1)),
    _quote("docs/fine_tuning.md", FINE_TUNING, "({} epochs, batch {}, flips and crops)",
           (("settings", "small", "epochs"), "d", 1), (("settings", "small", "batch_size"), "d", 1)),
    _quote("docs/fine_tuning.md", FINE_TUNING, "run ({} head-only epochs, then all layers)",
           (("settings", "freeze_epochs"), "d", 1)),
    _quote("docs/fine_tuning.md", FINE_TUNING, "from {}, {} and {} on validation (seed {};",
           (("settings", "lrs", 0), "g", 1), (("settings", "lrs", 1), "g", 1),
           (("settings", "lrs", 2), "g", 1), (("settings", "choice_seeds", 0), "d", 1)),
    _quote("docs/fine_tuning.md", FINE_TUNING, "trained with seeds {}-{}, and the test set",
           (("settings", "final_seeds", 0), "d", 1), (("settings", "final_seeds", -1), "d", 1)),
    _quote("docs/fine_tuning.md", FINE_TUNING, "the validation split is {} images",
           (("target", "validation_images"), "d", 1)),
    # only the fine-tuned arm's choice fits the one "{}"; the from-scratch arm also chose 0.004
    _quote("docs/fine_tuning.md", FINE_TUNING, "(both arms chose {}).",
           (("arms", "fine_tuned", "chosen"), "g", 1)),
    # ---------------------------------------------------------------- docs/training.md
    _quote("docs/training.md", "distillation/kd.json",
           "Test top-1 per seed ({}, {}, {}): {}, {}, {} % with the teacher and {}, {}, {} % without.",
           *((("seeds", i), "d", 1) for i in range(3)),
           *(((*KD_TEACHER, "runs", ("seed", s), "test_accuracy"), ".2f", PCT) for s in range(3)),
           *(((*KD_NONE, "runs", ("seed", s), "test_accuracy"), ".2f", PCT) for s in range(3))),
    _quote("docs/training.md", "demo_sweep/seeds.json",
           "Over seeds {}, {} and {} the recipe gives **{} ± {} %** test top-1 ({}, {}, {} %; validation {} ± {} %;",
           *((("seeds", i), "d", 1) for i in range(3)),
           (("configs", 0, "test_mean"), ".2f", PCT), (("configs", 0, "test_std"), ".2f", PCT),
           *((("configs", 0, "runs", ("seed", s), "test_accuracy"), ".2f", PCT) for s in range(3)),
           (("configs", 0, "val_mean"), ".2f", PCT), (("configs", 0, "val_std"), ".2f", PCT)),
    # settings the results record
    _quote("docs/training.md", "distillation/kd.json",
           "the demo recipe with `{}`, seeds {}-{}, test evaluated once per run",
           (("overrides", 0), "s", 1), (("seeds", 0), "d", 1), (("seeds", -1), "d", 1)),
    _quote("docs/training.md", "demo_sweep/lr_sweep.json",
           "chosen on validation top-1 (seed {}) among {}, {}, {} and {};",
           (("seeds", 0), "d", 1),
           *((("grid", "learning_rate", i), "s", 1) for i in range(4))),
    _quote("docs/training.md", "demo/report.json",
           "(RAdam, lr {} with a per-step cosine decay, batch {}, {} epochs, no augmentation)",
           (("recipe", "learning_rate"), "g", 1), (("recipe", "batch_size"), "d", 1),
           (("recipe", "epochs"), "d", 1)),
    _quote("docs/training.md", "demo/report.json", "The 10-minute budget fixes {} epochs.",
           (("recipe", "epochs"), "d", 1)),
]  # fmt: skip


MVM = "meliusnet_vs_mobilenet/meliusnet_vs_mobilenet.json"
BENCH = "benchmarks/bench.json"
H2H = "benchmarks/head_to_head/head_to_head_{}.json"
H2H_RUNS = (1, 2, 3)
DEMO = "demo/report.json"
INT8 = "int8_ablation/results.json"
MVM_NETWORKS = ("MeliusNetTinyNarrow", "MeliusNetTiny", "MeliusNetTinyWide",
                "MobileNetV1-0.125", "MobileNetV1-0.25", "MobileNetV1-0.5")  # fmt: skip


def _mvm(name, *rest):
    """A row of the MeliusNet-vs-MobileNet table (``name`` as in its first column)."""
    return ("rows", ("name", name), *rest)


def _matched(name, field):
    """A MeliusNet's float-MobileNet interpolation (the second table of models.md)."""
    return ("matched", ("name", name), field)


def _cbd_final(network, label, field):
    return ("networks", ("network", network), "final", ("label", label), field)


MODELS_DEPLOY_README_QUOTES = [
    # ---------------------------------------------------------------- docs/models.md
    # method: what the run records (the CLI defaults of the same paragraphs are not listed)
    _quote("docs/models.md", MVM, "sizes, {} to {} MiB, bracket the binary networks' {} to {} MiB",
           (_mvm("MobileNetV1-0.125", "size_mib_paper"), ".2f", 1),
           (_mvm("MobileNetV1-0.5", "size_mib_paper"), ".2f", 1),
           (_mvm("MeliusNetTinyNarrow", "size_mib_paper"), ".2f", 1),
           (_mvm("MeliusNetTinyWide", "size_mib_paper"), ".1f", 1)),
    # one recipe family: every network's recipe says the same (epsilon 1e-05 written 1e-5)
    *(_quote("docs/models.md", MVM,
             "RAdam (beta_1 {}, epsilon {}e-5), per-step cosine decay, batch {}, `{}` augmentation",
             (("recipes", name, "beta_1"), "g", 1), (("recipes", name, "epsilon"), ".0f", 1e5),
             (("recipes", name, "batch_size"), "d", 1), (("recipes", name, "augment"), "s", 1))
      for name in MVM_NETWORKS),
    *(_quote("docs/models.md", MVM, "(the last {} % of the training images) is chosen",
             (("recipes", name, "validation_fraction"), ".0f", PCT))
      for name in MVM_NETWORKS),
    _quote("docs/models.md", MVM, "calibrated on the first {} training images",
           (("calibration_images",), "d", 1)),
    _quote("docs/models.md", MVM,
           "median of {} single-image runs with one thread, all flatbuffers taking turns over {} rounds",
           (("latency", "runs"), "d", 1), (("latency", "rounds"), "d", 1)),
    # results
    _quote("docs/models.md", MVM,
           "(learning-rate grid {}, {}, {} chosen per network on seed {}'s final validation top-1, "
           "then seeds {} and {} at the chosen rate; {} epochs;",
           *((("learning_rates", i), "g", 1) for i in range(3)), (("seeds", 0), "d", 1),
           (("final_seeds", 0), "d", 1), (("final_seeds", 1), "d", 1), (("epochs",), "d", 1)),
    _quote("docs/models.md", MVM,
           "Test top-1 is mean ± std over seeds {}-{}; int8 rows are the seed-{} flatbuffer's top-1; "
           "latency is the flatbuffer's at {} thread on this {}-core x86 machine",
           (_mvm("MeliusNetTiny", "seeds", 0), "d", 1), (_mvm("MeliusNetTiny", "seeds", -1), "d", 1),
           (("seeds", 0), "d", 1), (("latency", "threads"), "d", 1), (("machine", "cores"), "d", 1)),
    _quote("docs/models.md", MVM, "have the same size ({} and {} MiB): {} % against {} %, with fewer",
           (_mvm("MeliusNetTiny", "size_mib_paper"), ".3f", 1),
           (_mvm("MobileNetV1-0.125", "size_mib_paper"), ".3f", 1),
           (_mvm("MeliusNetTiny", "test_accuracy"), ".2f", PCT),
           (_mvm("MobileNetV1-0.125", "test_accuracy"), ".2f", PCT)),
    _quote("docs/models.md", MVM,
           "MeliusNetTinyWide is {} points above the float MobileNet interpolated at its size "
           "({} % at {} MiB, between widths {} and {}) and {} points above it at its OPS ({} % at {}e6)",
           (_matched("MeliusNetTinyWide", "difference_at_size_mib_paper"), ".2f", PCT),
           (_matched("MeliusNetTinyWide", "mobilenet_at_size_mib_paper"), ".2f", PCT),
           (_mvm("MeliusNetTinyWide", "size_mib_paper"), ".2f", 1),
           (_mvm("MobileNetV1-0.25", "width"), "g", 1), (_mvm("MobileNetV1-0.5", "width"), "g", 1),
           (_matched("MeliusNetTinyWide", "difference_at_ops"), ".2f", PCT),
           (_matched("MeliusNetTinyWide", "mobilenet_at_ops"), ".2f", PCT),
           (_mvm("MeliusNetTinyWide", "ops"), ".1f", 1e-6)),
    _quote("docs/models.md", MVM, "the narrowest MeliusNet ({} MiB) is",
           (_mvm("MeliusNetTinyNarrow", "size_mib_paper"), ".3f", 1)),
    _quote("docs/models.md", MVM, "({} % against {} % at width {})",
           (_mvm("MobileNetV1-0.25 int8", "test_accuracy"), ".2f", PCT),
           (_mvm("MobileNetV1-0.25", "test_accuracy"), ".2f", PCT),
           (_mvm("MobileNetV1-0.25", "width"), "g", 1)),
    _quote("docs/models.md", MVM, "MobileNet-v1 0.25 int8 ({} MiB) is",
           (_mvm("MobileNetV1-0.25 int8", "size_mib_paper"), ".3f", 1)),
    _quote("docs/models.md", MVM, "points below MeliusNetTiny ({} MiB), and MobileNet-v1 0.5 int8 ({} MiB)",
           (_mvm("MeliusNetTiny", "size_mib_paper"), ".3f", 1),
           (_mvm("MobileNetV1-0.5 int8", "size_mib_paper"), ".3f", 1)),
    _quote("docs/models.md", MVM, "points below MeliusNetTinyWide ({} MiB).",
           (_mvm("MeliusNetTinyWide", "size_mib_paper"), ".3f", 1)),
    _quote("docs/models.md", MVM, "(MeliusNetTinyNarrow {} points below it, MeliusNetTiny {} above)",
           (_matched("MeliusNetTinyNarrow", "difference_at_latency_ms"), ".2f", -PCT),
           (_matched("MeliusNetTiny", "difference_at_latency_ms"), ".2f", PCT)),
    _quote("docs/models.md", MVM, "({} int8: {} % in {} ms against MeliusNetTinyNarrow's {} % in {} ms)",
           (_mvm("MobileNetV1-0.25 int8", "width"), "g", 1),
           (_mvm("MobileNetV1-0.25 int8", "test_accuracy"), ".2f", PCT),
           (_mvm("MobileNetV1-0.25 int8", "latency_ms"), ".3f", 1),
           (_mvm("MeliusNetTinyNarrow", "test_accuracy"), ".2f", PCT),
           (_mvm("MeliusNetTinyNarrow", "latency_ms"), ".3f", 1)),
    _quote("docs/models.md", MVM, "Limits of the measurement: a {}-epoch budget",
           (("epochs",), "d", 1)),
    _quote("docs/models.md", MVM, "chose the largest learning rate of the grid ({};",
           (("learning_rates", -1), "g", 1)),
    # "every network chose" it: each network's chosen rate is that number
    *(_quote("docs/models.md", MVM, "chose the largest learning rate of the grid ({};",
             (_mvm(name, "learning_rate"), "g", 1))
      for name in MVM_NETWORKS),
    # ---------------------------------------------------------------- docs/deployment.md
    *(_quote("docs/deployment.md", VERIFY.format(name), "then converted and checked on the {} test images",
             (("samples",), ",", 1))
      for name in ("bnn_plus", "ste")),
    _quote("docs/deployment.md", INT8, "(the stem conv's {} weights as many as all float kernels",
           (("sources", ("layer", "stem_s0_conv"), "weights"), "d", 1)),
    # the ablation's model is the demo's (int8 results.json "model": runs/demo/train/model.keras)
    _quote("docs/deployment.md", DEMO, "on the demo's MeliusNetTiny (lr {}, seed {};",
           (("recipe", "learning_rate"), "g", 1), (("recipe", "seed"), "d", 1)),
    _quote("docs/deployment.md", INT8, "int8 flatbuffers on the {} validation images",
           (("validation_images",), ",", 1)),
    _quote("docs/deployment.md", INT8, "calibration on the first {} training images)",
           (("calibration_images",), "d", 1)),
    # ---------------------------------------------------------------- docs/benchmarks.md
    _quote("docs/benchmarks.md", BENCH, "with the LCE interpreter (indirect BGEMM) at {} and {} threads",
           (("rows", 0, "threads"), "d", 1), (("rows", -1, "threads"), "d", 1)),
    _quote("docs/benchmarks.md", BENCH, "The machine is a {}-core {} VM",
           (("machine", "cores"), "d", 1), (("machine", "machine"), "s", 1)),
    # the prose lines of bench.md inside the page's markers (test_docs checks only its tables)
    _quote("docs/benchmarks.md", BENCH,
           "Machine: {} ({} cores, {}), TensorFlow {}; 224x224, batch 1; LCE interpreter with "
           "indirect BGEMM. Each model ran {} times per round, in turn with the others, for {} rounds:",
           (("machine", "cpu"), "s", 1), (("machine", "cores"), "d", 1),
           (("machine", "machine"), "s", 1), (("machine", "tensorflow"), "s", 1),
           (("runs",), "d", 1), (("rounds",), "d", 1)),
    _quote("docs/benchmarks.md", BENCH, "meliusnet22: LCE (indirect BGEMM), {} thread(s), medians of {} runs, total {} ms.",
           (("breakdown", "threads"), "d", 1), (("breakdown", "runs"), "d", 1),
           (("breakdown", "total_ms"), ".1f", 1)),
    _quote("docs/benchmarks.md", BENCH,
           "{} thread(s), medians of {} runs, pre-sign BatchNorms not folded, total {} ms.",
           (("breakdown_unfolded", "threads"), "d", 1), (("breakdown_unfolded", "runs"), "d", 1),
           (("breakdown_unfolded", "total_ms"), ".1f", 1)),
    _quote("docs/benchmarks.md", BENCH, "Isolated binary 3x3 conv ({}x{}x{} -> {}): {} GBOPs/s, so the",
           *((("binary_conv_rate", "shape", i), "d", 1) for i in range(3)),
           (("binary_conv_rate", "filters"), "d", 1), (("binary_conv_rate", "gbops_per_s"), ".1f", 1)),
    _quote("docs/benchmarks.md", BENCH,
           "Training throughput (CPU, batch {}, 224x224, RAdam, synthetic batch): the configurations "
           "took turns, {} steps each per round",
           (("training", 0, "batch_size"), "d", 1), (("training", 0, "steps"), "d", 1)),
    _quote("docs/benchmarks.md", BENCH, "**Training throughput** (batch {}, 224x224)",
           (("training", 0, "batch_size"), "d", 1)),
    *(_quote("docs/benchmarks.md", H2H.format(n), "times them at {} thread in {} alternating rounds of {} runs",
             (("rows", 0, "threads"), "d", 1), (("rounds",), "d", 1), (("runs",), "d", 1))
      for n in H2H_RUNS),
    # ---------------------------------------------------------------- README.md
    _quote("README.md", DEMO, "Fashion-MNIST training images ({} epochs; the last",
           (("recipe", "epochs"), "d", 1)),
    *(_quote("README.md", path, "All on {}-core {} VMs",
             (("machine", "cores"), "d", 1), (("machine", "machine"), "s", 1))
      for path in (BENCH, MVM, *(H2H.format(n) for n in H2H_RUNS))),
    _quote("README.md", DEMO, "({}–{}x over the rounds)",
           (("speedup_vs_float_range", 0), ".2f", 1), (("speedup_vs_float_range", 1), ".2f", 1)),
    _quote("README.md", "distillation/kd.json", "epochs, seeds {}-{}): 93.23",
           (("seeds", 0), "d", 1), (("seeds", -1), "d", 1)),
    _quote("README.md", "fine_tuning/results.json", "fine-tuned on {} PNGs of the other",
           (("target", "train_images"), "d", 1)),
    *(_quote("README.md", H2H.format(n), "(224x224, {} thread, same BatchNorm statistics;",
             (("rows", 0, "threads"), "d", 1))
      for n in H2H_RUNS),
    *(_quote("README.md", H2H.format(n), "each {} alternating rounds of {} runs;",
             (("rounds",), "d", 1), (("runs",), "d", 1))
      for n in H2H_RUNS),
    _quote("README.md", BENCH, "{} MiB by the paper's accounting",
           (("sizes", ("model", "melius_larq MeliusNet22"), "floor_mib"), ".2f", 1)),
    _quote("README.md", MVM, "Fashion-MNIST, {} epochs, 3 seeds): at the same size",
           (("epochs",), "d", 1)),
    # "(0.22 MiB each)": each of the two networks
    *(_quote("README.md", MVM, "({} MiB each)", (_mvm(name, "size_mib_paper"), ".2f", 1))
      for name in ("MeliusNetTiny", "MobileNetV1-0.125")),
    _quote("README.md", BNN_EXP, "test top-1, 3 seeds, p = {}); SignSwish at β = {} costs",
           (("step2", "claim", "test", "p"), ".2f", 1),
           (("step1", "arms", "SignSwish β=5", "overrides", "bnn_beta"), "g", 1)),
    _quote("README.md", CBD, "CBD at {} bits/weight keeps 91.29 %",
           (_cbd_final("vgg", "CBD J=4, btn 0.05", "bits_per_weight_all"), ".2f", 1)),
    _quote("README.md", CBD, "plain per-channel 4-bit rounding ({} bits) 90.53 %",
           (_cbd_final("vgg", "plain per-channel b=4", "bits_per_weight_all"), ".2f", 1)),
    _quote("README.md", CBD, "(94.11 % at {} bits against CBD's 92.43 % at {};",
           (_cbd_final("resnet18", "plain per-channel b=4", "bits_per_weight_all"), ".2f", 1),
           (_cbd_final("resnet18", "CBD J=4, btn 0.02", "bits_per_weight_all"), ".2f", 1)),
    # "within" = its test drop from the float ResNet-18 (test_drop_pp), as docs/cbd.md quotes it
    _quote("README.md", CBD, "CBD is within {} pp at {} bits)",
           (_cbd_final("resnet18", "CBD J=5, btn 0.02", "test_drop_pp"), ".2f", 1),
           (_cbd_final("resnet18", "CBD J=5, btn 0.02", "bits_per_weight_all"), ".2f", 1)),
]  # fmt: skip


def _value(data, path: tuple):
    for key in path:
        if isinstance(key, tuple):
            field, wanted = key
            data = next(item for item in data if item.get(field) == wanted)
        else:
            data = data[key]
    return data


ALL_QUOTES = [*QUOTES, *EXPERIMENT_QUOTES, *MODELS_DEPLOY_README_QUOTES]


@pytest.mark.parametrize("quote", ALL_QUOTES, ids=[f"{q.page}:{q.words}" for q in ALL_QUOTES])
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
