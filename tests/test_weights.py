"""Weight files: larq_zoo compatibility, published-weights download checks, bad files."""

import hashlib
import logging

import numpy as np
import pytest
from conftest import SMALL_SHAPE, publish_locally, require

import melius_larq
from melius_larq import weights as weights_lib
from melius_larq._compat import tf

# one worker builds this module's shared fixtures once (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_weights")

# Tolerance for larq_zoo parity. Both models run the same float ops on the same
# weights (grouped convs natively instead of split/concat), so only summation order differs.
ZOO_PARITY_ATOL = 1e-5


def _randomize(model, seed=0):
    """Random weights everywhere, including BN statistics, so parity checks mean something."""
    rng = np.random.RandomState(seed)
    values = []
    for w in model.weights:
        if "moving_variance" in w.name:
            values.append(rng.uniform(0.5, 2.0, w.shape))
        elif "gamma" in w.name:
            values.append(rng.uniform(0.5, 1.5, w.shape))
        else:
            values.append(rng.normal(0, 0.1, w.shape))
    model.set_weights([v.astype(np.float32) for v in values])
    return model


@pytest.fixture(scope="module")
def zoo_model():
    lqz = require("larq_zoo")
    return _randomize(
        lqz.literature.MeliusNet22(weights=None, input_shape=(64, 64, 3), num_classes=10)
    )


def test_larq_zoo_weights_give_the_same_outputs(zoo_model, tmp_path):
    path = tmp_path / "zoo.h5"
    zoo_model.save_weights(path)
    model = melius_larq.MeliusNet22(
        preset="larq_zoo", weights=str(path), input_shape=(64, 64, 3), num_classes=10,
        classifier_activation="softmax",
    )  # fmt: skip
    x = np.random.RandomState(1).uniform(-2, 2, (4, 64, 64, 3)).astype(np.float32)
    expected = zoo_model(x, training=False).numpy()
    np.testing.assert_allclose(model(x, training=False), expected, atol=ZOO_PARITY_ATOL)
    # logits too, which are far more sensitive than the softmax
    zoo_logits = tf.keras.Model(zoo_model.input, zoo_model.get_layer("head_dense").output)
    ours = tf.keras.Model(model.input, model.get_layer("head_dense").output)
    scale = max(1.0, float(np.abs(zoo_logits(x)).max()))
    np.testing.assert_allclose(ours(x), zoo_logits(x), atol=ZOO_PARITY_ATOL * scale)


def test_larq_zoo_no_top_weights(zoo_model, tmp_path):
    notop = tf.keras.Model(zoo_model.input, zoo_model.get_layer("head_relu").output)
    path = tmp_path / "zoo_notop.h5"
    notop.save_weights(path)
    model = melius_larq.MeliusNet22(preset="larq_zoo", weights=str(path), include_top=False)
    x = np.random.RandomState(2).uniform(-2, 2, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x, training=False), notop(x), atol=ZOO_PARITY_ATOL * 10)


def test_own_weights_round_trip(tmp_path):
    model = _randomize(melius_larq.MeliusNetA(input_shape=SMALL_SHAPE, num_classes=3))
    path = tmp_path / "a.h5"
    model.save_weights(path)
    again = melius_larq.MeliusNetA(input_shape=SMALL_SHAPE, num_classes=3, weights=str(path))
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    model = melius_larq.MeliusNet22(input_shape=SMALL_SHAPE, num_classes=10)
    path = tmp_path_factory.mktemp("w") / "m22.h5"
    model.save_weights(path)
    return str(path)


def test_mismatched_num_classes(saved_weights):
    with pytest.raises(
        ValueError, match=r"num_classes=10, but the model was built with num_classes=5"
    ):
        melius_larq.MeliusNet22(input_shape=SMALL_SHAPE, num_classes=5, weights=saved_weights)


def test_mismatched_input_channels(saved_weights):
    with pytest.raises(ValueError, match=r"expect 3 input channels, but the model's input has 1"):
        melius_larq.MeliusNet22(input_shape=(32, 32, 1), num_classes=10, weights=saved_weights)


def test_weights_of_another_variant(saved_weights):
    with pytest.raises(ValueError, match=r"different"):
        melius_larq.MeliusNet29(input_shape=SMALL_SHAPE, num_classes=10, weights=saved_weights)


def test_failed_load_leaves_the_model_untouched(saved_weights):
    model = melius_larq.MeliusNet22(input_shape=SMALL_SHAPE, num_classes=5)
    before = model.get_weights()
    # the classifier is the last layer checked: every other layer's weights had been read
    with pytest.raises(ValueError, match="num_classes=10, but the model was built with num_c"):
        weights_lib.load_h5_weights(model, saved_weights)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_and_non_weights_files(tmp_path):
    with pytest.raises(ValueError, match=r"'.*nope.h5' does not exist"):
        melius_larq.MeliusNet22(weights=str(tmp_path / "nope.h5"))
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"is not a weights file"):
        melius_larq.MeliusNet22(weights=str(text))
    with pytest.raises(ValueError, match=r"Expected `weights`"):
        melius_larq.MeliusNet22(weights=42)


def test_bad_weights_fail_before_the_model_is_built(tmp_path, monkeypatch):
    import melius_larq.models as models

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before its weights argument was checked")

    monkeypatch.setattr(models, "_Builder", no_build)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    for weights, message in ((str(tmp_path / "nope.h5"), "does not exist"),
                             (str(text), "is not a weights file"), (42, "Expected `weights`")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            melius_larq.MeliusNet22(weights=weights)
    with pytest.raises(ValueError, match="num_classes=1000, but the model was built with "):
        melius_larq.MeliusNet22(weights="imagenet", num_classes=10)
    with pytest.raises(AssertionError, match="was built"):  # a good value goes on to the build
        melius_larq.MeliusNet22(weights=None)


def test_imagenet_weights_refuse_another_preset_and_unpublished_models():
    with pytest.raises(
        ValueError,
        match=r"weights='imagenet' for MeliusNet22 were trained with preset='larq_zoo', but "
        r"preset='lce' was given: leave preset unset",
    ):
        melius_larq.MeliusNet22(weights="imagenet", preset="lce")
    with pytest.raises(ValueError, match=r"No published ImageNet weights for MeliusNet29"):
        melius_larq.MeliusNet29(weights="imagenet")
    assert melius_larq.list_pretrained() == ["MeliusNet22 (preset='larq_zoo')"]


def test_preset_pick_is_lce_without_published_weights():
    lce = melius_larq.MeliusNet22(input_shape=SMALL_SHAPE, num_classes=2, preset="lce")
    picked = melius_larq.MeliusNet22(input_shape=SMALL_SHAPE, num_classes=2)
    assert [type(x).__name__ for x in lce.layers] == [type(x).__name__ for x in picked.layers]
    assert lce.get_layer("stem_s0_conv").kernel_initializer.get_config() == (
        picked.get_layer("stem_s0_conv").kernel_initializer.get_config()
    )
    assert weights_lib.pick_preset("MeliusNet22", "pick", None) == "lce"
    assert weights_lib.pick_preset("MeliusNet22", "pick", "imagenet") == "larq_zoo"
    assert weights_lib.pick_preset("MeliusNet22", "reference", "w.h5") == "reference"


def test_offline_imagenet_fails_fast_naming_the_url_and_the_way_out(tmp_path, monkeypatch):
    """No network: the downloader fails as urllib does without a resolver."""
    import urllib.error

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise Exception(  # get_file wraps URL errors in a bare Exception
            f"URL fetch failure on {args[1]}: None -- "
            f"{urllib.error.URLError('[Errno -3] Temporary failure in name resolution')}"
        )

    monkeypatch.setattr(tf.keras.utils, "get_file", offline)
    monkeypatch.setenv("MELIUS_LARQ_CACHE", str(tmp_path))
    with pytest.raises(OSError) as err:
        melius_larq.MeliusNet22(weights="imagenet", include_top=False)
    assert len(calls) == 1  # one attempt, no retries: fails as fast as the resolver answers
    message = str(err.value)
    cfg = weights_lib.get_pretrained_cfg("MeliusNet22", "larq_zoo", False)
    assert "\n" not in message and cfg.url in message and "`weights=`" in message, message


def _cfg(path, sha):
    return weights_lib.PretrainedCfg("MeliusNet22", "larq_zoo", False, path.as_uri(), sha)


def test_download_checks_the_sha256(tmp_path):
    source = tmp_path / "meliusnet22_weights_notop.h5"
    source.write_bytes(b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"Refusing the downloaded .*sha256"):
        weights_lib.fetch_pretrained(_cfg(source, "0" * 64), cache_dir=cache)
    assert not any(p.is_file() for p in cache.rglob("*")), "nothing may be left behind"
    good = hashlib.sha256(b"tampered").hexdigest()
    path = weights_lib.fetch_pretrained(_cfg(source, good), cache_dir=cache)
    assert path.read_bytes() == b"tampered" and path.parent.parent == cache


def test_download_offline_gives_a_clear_error(tmp_path):
    cfg = weights_lib.PretrainedCfg(
        "MeliusNet22", "larq_zoo", False, "http://127.0.0.1:9/meliusnet22.h5", "0" * 64
    )
    with pytest.raises(OSError, match=r"Could not download .* offline"):
        weights_lib.fetch_pretrained(cfg, cache_dir=tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_weights_imagenet_end_to_end_from_a_local_mirror(zoo_model, tmp_path, monkeypatch, caplog):
    notop = tf.keras.Model(zoo_model.input, zoo_model.get_layer("head_relu").output)
    publish_locally(notop, tmp_path / "meliusnet22_weights_notop.h5", include_top=False,
                    monkeypatch=monkeypatch, cache=tmp_path / "cache")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="melius_larq"):
        model = melius_larq.MeliusNet22(weights="imagenet", include_top=False)  # preset picked
    picked = [r.getMessage() for r in caplog.records if r.name == "melius_larq"]
    assert len(picked) == 1 and "using preset='larq_zoo'" in picked[0], picked
    x = np.random.RandomState(3).uniform(-2, 2, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x, training=False), notop(x), atol=ZOO_PARITY_ATOL * 10)
    assert (tmp_path / "cache" / "meliusnet22" / "meliusnet22_weights_notop.h5").is_file()


def test_published_weights_are_pinned():
    for cfg in weights_lib.PRETRAINED:
        assert len(cfg.sha256) == 64 and cfg.url.startswith("https://github.com/larq/zoo/")
