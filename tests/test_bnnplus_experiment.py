"""The BNN+ experiment: Welch's t-test, the attribution arms and the pipeline end to end."""

import dataclasses
import json

import pytest

from melius_larq import bnnplus
from melius_larq.zoo import stats
from melius_larq.zoo.experiments import bnnplus as exp
from melius_larq.zoo.recipes import apply_overrides, bnn_plus_options, get_recipe

# The continued fraction of the incomplete beta function converges to ~1e-12; the reference
# values are given to 15-16 digits (Student's t quantiles; SciPy's ttest_ind for the Welch
# examples). A wrong degrees-of-freedom formula or a one-sided p is off by > 1e-3.
P_ATOL = 1e-9


@pytest.mark.parametrize(
    "df, t, p",
    [(1, 1.0, 0.5), (2, 4.302652729911275, 0.05), (10, 2.228138851986274, 0.05),
     (30, 2.042272456301238, 0.05), (4, 0.0, 1.0)],
)  # fmt: skip
def test_student_t_p_values_from_the_incomplete_beta_function(df, t, p):
    assert stats._betainc(df / 2, 0.5, df / (df + t * t)) == pytest.approx(p, abs=P_ATOL)


def test_welch_t_test_matches_reference_values():
    result = stats.welch_t_test([1, 2, 3], [4, 5, 6])
    assert result["difference"] == -3.0
    assert result["t"] == pytest.approx(-3.6742346141747673, abs=1e-12)
    assert result["df"] == pytest.approx(4.0, abs=1e-12)
    assert result["p"] == pytest.approx(0.021311641128756713, abs=P_ATOL)
    unequal = stats.welch_t_test([0.861, 0.858, 0.866], [0.852, 0.855, 0.849, 0.851])
    assert unequal["t"] == pytest.approx(3.7462898726223273, rel=1e-9)
    assert unequal["df"] == pytest.approx(3.1402578014392213, rel=1e-9)
    assert unequal["p"] == pytest.approx(0.030685891968337833, abs=P_ATOL)
    for a, b in (([0.9], [0.8, 0.85]), ([0.9, 0.9], [0.8, 0.8])):  # undefined
        undefined = stats.welch_t_test(a, b)
        assert undefined["t"] is None and undefined["p"] is None
        assert undefined["difference"] == pytest.approx(sum(a) / len(a) - sum(b) / len(b))


def _changed_options(overrides):
    """The BNNPlusConfig fields an arm changes against BNN+ with every ingredient off."""
    base = get_recipe(exp.BNN_RECIPE)
    off = bnnplus.BNNPlusConfig(**bnn_plus_options(apply_overrides(base, exp.recipes._ALL_OFF)))
    arm = bnnplus.BNNPlusConfig(**bnn_plus_options(apply_overrides(base, overrides)))
    return {f.name for f in dataclasses.fields(off) if getattr(off, f.name) != getattr(arm, f.name)}


def test_each_attribution_arm_changes_only_what_its_name_says():
    arms = exp.attribution_arms(betas=(2.0, 10.0), lambdas=(0.3, 3.0))
    assert list(arms) == ["BNN", "SignSwish β=2", "SignSwish β=10", "Manhattan λ=0.3",
                          "Manhattan λ=3", "α in forward", "BNN+ (all)"]  # fmt: skip
    assert arms["BNN"] == {}
    expected = {
        "SignSwish β=2": {"activation_estimator"},  # β = 2 is the package default
        "SignSwish β=10": {"activation_estimator", "beta"},
        "Manhattan λ=0.3": {"regularizer", "reg_lambda"},
        "Manhattan λ=3": {"regularizer", "reg_lambda"},
        "α in forward": {"alpha_in_forward"},
        "BNN+ (all)": {
            "activation_estimator",
            "beta",
            "regularizer",
            "reg_lambda",
            "alpha_in_forward",
        },
    }
    for name, fields in expected.items():
        assert _changed_options(arms[name]) == fields, name
    assert _changed_options(arms["SignSwish β=2"]) and arms["Manhattan λ=3"]["bnn_lambda"] == 3.0
    # 3 β and 3 λ, the full BNN+ arm's among them; the arms do not follow package defaults
    assert len(exp.DEFAULT_BETAS) == 3 and len(exp.DEFAULT_LAMBDAS) == 3
    assert exp.FULL_BNNPLUS_LAMBDA in exp.DEFAULT_LAMBDAS
    assert exp.FULL_BNNPLUS_BETA in exp.DEFAULT_BETAS
    assert arms["BNN+ (all)"]["bnn_beta"] == 5.0 and arms["BNN+ (all)"]["bnn_lambda"] == 0.3


@pytest.mark.large  # 21 tiny training runs: about a minute
def test_pipeline_end_to_end_on_a_tiny_budget(tiny_fmnist, tmp_path, monkeypatch):
    import melius_larq.zoo.train as train_mod

    runs, results = tmp_path / "runs", tmp_path / "results"
    kwargs = dict(epochs={1: 1, 2: 1, 3: 1}, seeds=(1, 2), betas=(), lambdas=(),
                  overrides={"batch_size": 16}, data_dir=str(tiny_fmnist), verbose=0)  # fmt: skip
    real_train, started = train_mod.train, []

    def recording_train(recipe, run_dir, **kw):
        started.append((str(run_dir), (runs / "pick.json").exists()))
        return real_train(recipe, run_dir, **kw)

    monkeypatch.setattr(train_mod, "train", recording_train)
    result = exp.run(runs, results, **kwargs)

    # step 1: one seed per arm; the pick is written before the first run of step 2 starts
    assert list(result["step1"]["arms"]) == ["BNN", "α in forward", "BNN+ (all)"]
    pick = result["pick"]["pick"]
    assert pick in ("α in forward", "BNN+ (all)")
    assert [written for d, written in started if "/step1/" in d] == [False] * 3
    assert all(written for d, written in started if "/step2/" in d or "/step3/" in d)
    assert len(started) == 3 + 4 + 4
    assert json.loads((runs / "pick.json").read_text())["pick"] == pick
    assert json.loads((results / "step1_pick.json").read_text())["pick"] == pick
    # steps 2 and 3: two arms, both seeds, Welch's test on the test accuracies
    for key, baseline, model in (("step2", "BNN", "BinaryNetSmall"),
                                 ("step3", "STE", "MeliusNetTiny")):  # fmt: skip
        step = result[key]
        assert step["model"] == model and list(step["arms"]) == [baseline, pick]
        assert [r["seed"] for r in step["arms"][pick]["runs"]] == [1, 2]
        claim = step["claim"]
        assert (claim["arm"], claim["baseline"]) == (pick, baseline)
        assert claim["test"]["p"] is None or 0.0 <= claim["test"]["p"] <= 1.0
    # the BNN+ runs log α and the near-α share per epoch (BNNPlusDiagnostics in train)
    history = result["step2"]["arms"][pick]["runs"][0]["history"]
    assert len(history["alpha_mean"]) == 1 and 0.0 <= history["near_alpha_fraction"][0] <= 1.0
    assert "alpha_mean" not in result["step2"]["arms"]["BNN"]["runs"][0]["history"]
    text = (results / "bnnplus_experiment.md").read_text()
    assert f"**{pick}**" in text and "Welch's t" in text and "## Step 3" in text
    assert json.loads((results / "bnnplus_experiment.json").read_text())["pick"]["pick"] == pick
    for png in ("accuracy_by_configuration.png", "alpha_over_epochs.png"):
        assert (results / png).read_bytes()[:4] == b"\x89PNG"

    # a re-run reads every finished run back: no training, the same numbers
    def no_training(*args, **kw):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_mod, "train", no_training)
    again = exp.run(runs, results, **kwargs)
    assert again["step2"]["claim"] == result["step2"]["claim"]
    assert again["pick"] == result["pick"]
    # runs with other settings in the same directory are refused, not mixed in
    with pytest.raises(ValueError, match="other settings \\(epochs\\)"):
        exp.run(runs, results, **{**kwargs, "epochs": {1: 2, 2: 1, 3: 1}})


def test_cli_reports_bad_arguments_as_one_error_line(tmp_path, capsys):
    args = ["--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert exp.main([*args, "--seeds", "0", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: Steps 2 and 3 need new seeds; 0 is step 1's seed."
    )
    assert exp.main([*args, "--betas", "0", "--until", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: Expected `beta` to be a finite float > 0, but got 0.0."
    assert exp.main([*args, "--set", "bnn_regularizer=ridge"]) == 2
    assert "bnn_regularizer='ridge' conflicts with binarization='ste'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was trained or written


def test_cli_passes_budgets_seeds_and_quick_mode(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(runs, results, **kw):
        seen.update(kw, runs=runs, results=results)
        raise ValueError("stop here")

    monkeypatch.setattr(exp.cli, "run", fake_run)
    exp.main(["--step2-epochs", "20", "--seeds", "4", "5", "6", "--set", "batch_size=64"])
    assert seen["epochs"] == {1: 3, 2: 20, 3: 4} and seen["seeds"] == [4, 5, 6]
    assert seen["overrides"] == ["batch_size=64"] and seen["until"] == 3
    assert (seen["runs"], seen["results"]) == ("runs/bnnplus", "docs/bnnplus_results")
    assert seen["betas"] == [2.0, 5.0, 10.0] and seen["lambdas"] == list(exp.DEFAULT_LAMBDAS)
    exp.main(["--quick"])
    assert seen["epochs"] == {1: 1, 2: 1, 3: 1} and seen["train_limit"] == 1024
    assert (seen["runs"], seen["results"]) == ("runs/bnnplus_quick", "runs/bnnplus_quick/results")
    assert len(seen["seeds"]) == 2 and len(seen["betas"]) == len(seen["lambdas"]) == 1
    assert capsys.readouterr().err.strip().endswith("error: stop here")


def test_runs_read_back_after_a_default_changes_only_where_it_cannot_matter(tmp_path):
    """A run directory written when a package default was different is accepted if that
    field cannot change the run (β of an STE run or of BNN+ without SignSwish, λ without a
    regularizer) and refused where it can (β of a SignSwish run)."""
    from melius_larq.zoo.train import check_run_settings

    base = get_recipe(exp.BNN_RECIPE)
    cases = [
        ({}, {"bnn_beta": 5.0, "bnn_weight_clip": 1.0}, None),  # STE: bnn_* are inert
        ({**exp.recipes._ALL_OFF, "bnn_alpha_in_forward": True}, {"bnn_beta": 5.0}, None),
        ({**exp.recipes._ALL_OFF, "bnn_activation": "sign_swish"}, {"bnn_beta": 5.0}, "bnn_beta"),
        (
            {**exp.recipes._ALL_OFF, "bnn_regularizer": "manhattan", "bnn_lambda": 0.3},
            {"bnn_lambda": 3.0},
            "bnn_lambda",
        ),  # fmt: skip
    ]
    for i, (overrides, saved_changes, refused) in enumerate(cases):
        recipe = apply_overrides(base, overrides)
        run = tmp_path / str(i)
        run.mkdir()
        (run / "config.json").write_text(json.dumps({**recipe.to_dict(), **saved_changes}))
        if refused is None:
            check_run_settings(recipe, run)
        else:
            with pytest.raises(ValueError, match=refused):
                check_run_settings(recipe, run)
