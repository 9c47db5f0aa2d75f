"""The int8 ablation command: one flatbuffer per arm, scored on the validation split."""

import json

import numpy as np
import pytest
from conftest import require

from melius_larq._compat import tf

require("larq_compute_engine")


@pytest.mark.large  # four int8 conversions and a fine-tuning: ~30 s
def test_int8_ablation_scores_every_arm_on_validation(tiny_fmnist, tmp_path):
    import melius_larq
    from melius_larq.zoo.experiments import int8_ablation

    tf.keras.utils.set_random_seed(0)
    model = melius_larq.MeliusNetTiny(input_shape=(28, 28, 1), num_classes=10, stem="small")
    path = tmp_path / "model.keras"
    model.save(path)
    arms = {"default": {}, "plain": {"normalize_concat_inputs": False},
            "qat": {"qat_lr": 3e-5}}  # fmt: skip
    out = int8_ablation.run(str(path), str(tmp_path / "res"), calibration_samples=16,
                            qat_samples=32, arms=arms, data_dir=str(tiny_fmnist))  # fmt: skip
    assert out["validation_images"] == 6 and out["calibration_images"] == 16  # 10 % of 64
    assert list(out["arms"]) == list(arms)
    for arm in out["arms"].values():
        assert 0.0 <= arm["val_accuracy"] <= 1.0 and arm["bytes"] > 0
        assert np.isclose(arm["val_accuracy"] * 6, round(arm["val_accuracy"] * 6))
        assert np.isclose(arm["agreement"] * 6, round(arm["agreement"] * 6))
    # the parts of the default path: three whole-model rows, then one row per float kernel
    layers = [row["layer"] for row in out["sources"] if "layer" in row]
    assert layers == ["stem_s0_conv", "section_0_transition_pw", "section_1_transition_pw",
                      "section_2_transition_pw", "head_dense"]  # fmt: skip
    assert [row["weights"] for row in out["sources"] if "layer" in row][0] == 3 * 3 * 1 * 32
    assert len(out["sources"]) == 4 + len(layers)
    assert all(0.0 <= row["agreement"] <= 1.0 for row in out["sources"])
    # the default arm's outputs, when passed in, stand for the conversion sources() would do
    from melius_larq.deploy.int8 import convert_int8
    from melius_larq.deploy.verify import keras_outputs, run_lce

    x = np.random.default_rng(0).uniform(0, 1, (16, 28, 28, 1)).astype(np.float32)
    float_out = keras_outputs(model, x)
    given = run_lce(convert_int8(model, x[:8]), x)
    assert int8_ablation.sources(model, x[:8], x, float_out) == int8_ablation.sources(
        model, x[:8], x, float_out, int8_out=given
    )
    saved = json.loads((tmp_path / "res" / "results.json").read_text())
    assert saved["arms"]["plain"]["options"] == {"normalize_concat_inputs": False}
    assert "| qat |" in (tmp_path / "res" / "results.md").read_text()


def test_int8_ablation_rejects_bad_options(tmp_path, capsys):
    from melius_larq.zoo.experiments import int8_ablation

    with pytest.raises(SystemExit) as err:
        int8_ablation.main([str(tmp_path / "missing.keras"), "--results", str(tmp_path)])
    assert err.value.code == 2 and "no model file" in capsys.readouterr().err
    (tmp_path / "m.keras").write_bytes(b"x")
    with pytest.raises(SystemExit):
        int8_ablation.main([str(tmp_path / "m.keras"), "--results", "r", "--qat-samples", "0"])
    assert "--qat-samples must be >= 1, got 0" in capsys.readouterr().err
