"""The VGG16 flagger: preprocessing, architecture, weights files, training and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blendflag.errors import BlendflagError
from blendflag.io.stamps import stamp_noise_sigma
from blendflag_plugins import vgg16
from blendflag_plugins.vgg16 import (
    DEFAULT_WEIGHTS,
    INPUT_SIZE,
    VGG16Flagger,
    build_model,
    crop_center,
    preprocess,
    read_weights,
    save_weights,
)

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def model():
    return build_model(precision="float32")


def test_noise_sigma_from_border():
    rng = np.random.default_rng(1)
    stamps = rng.normal(0, 7.0, (50, 51, 51)).astype(np.float32)
    stamps[:, 20:31, 20:31] += 1000.0  # a bright source in the middle does not matter
    sigma = stamp_noise_sigma(stamps)
    assert abs(np.median(sigma) - 7.0) < 0.5


def test_preprocess_shape_scale_invariance_and_crop():
    rng = np.random.default_rng(2)
    stamps = rng.normal(0, 5.0, (4, 51, 51)).astype(np.float32)
    stamps[:, 25, 25] += 500
    x = preprocess(stamps, channels=3)
    assert x.shape == (4, INPUT_SIZE, INPUT_SIZE, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    # dividing by the stamp's own noise makes the input independent of the ADU scale
    np.testing.assert_allclose(preprocess(10 * stamps), preprocess(stamps), atol=1e-5)
    # the centre pixel 25 of a 51-px stamp is pixel 23 of the 48-px crop (centre 23.5)
    assert np.unravel_index(x[0, ..., 0].argmax(), (48, 48)) == (23, 23)
    assert crop_center(np.zeros((1, 31, 31))).shape == (1, 48, 48)  # small stamps are padded


def test_preprocess_rejects_nan():
    stamps = np.zeros((1, 51, 51), np.float32)
    stamps[0, 3, 3] = np.nan
    with pytest.raises(BlendflagError, match="NaN"):
        preprocess(stamps)


def test_architecture(model):
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convs) == 13
    names = [layer.name for layer in model.layers[-5:]]
    assert names == ["flatten", "fc256", "dropout", "fc1024", "p_blend"]
    assert model.get_layer("fc256").units == 256 and model.get_layer("fc1024").units == 1024
    assert model.output_shape == (None, 1)
    p = np.asarray(model(np.zeros((2, INPUT_SIZE, INPUT_SIZE, 3), np.float32)))
    assert ((p >= 0) & (p <= 1)).all()


def test_bf16_policy_keeps_float32_output():
    m = build_model(precision="bfloat16")
    assert m.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert m.output.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_weights_roundtrip(model, tmp_path):
    path = save_weights(model, tmp_path / "w.npz", {"input_size": INPUT_SIZE, "threshold": 0.6})
    arrays, meta = read_weights(path)
    assert meta["threshold"] == 0.6 and meta["format"] == vgg16.FORMAT
    for a, w in zip(arrays, model.get_weights(), strict=True):
        np.testing.assert_allclose(a, w, rtol=1e-3, atol=1e-4)  # float16 storage
    assert path.stat().st_size < 32e6


def _corrupt_files(tmp_path, model):
    good = save_weights(model, tmp_path / "good.npz", {"input_size": INPUT_SIZE})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100_000])
    text = tmp_path / "text.npz"
    text.write_text("not weights")
    nometa = tmp_path / "nometa.npz"
    np.savez(nometa, w000=np.zeros(3))
    wrongfmt = tmp_path / "wrongfmt.npz"
    np.savez(wrongfmt, metadata=np.array(json.dumps({"format": "other"})), w000=np.zeros(3))
    shapes = tmp_path / "shapes.npz"
    np.savez(
        shapes,
        metadata=np.array(
            json.dumps({"format": vgg16.FORMAT, "shapes": [[3]], "format_version": 1})
        ),
        w000=np.zeros(3),
    )
    return {
        "missing": (tmp_path / "nope.npz", "not found"),
        "truncated": (truncated, "not a"),
        "text": (text, "not a"),
        "no metadata": (nometa, "not a blendflag VGG16 weights file"),
        "wrong format": (wrongfmt, "not a blendflag VGG16 weights file"),
        "wrong shapes": (shapes, "does not fit the VGG16 model"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "truncated", "text", "no metadata", "wrong format", "wrong shapes"]
)
def test_bad_weights_files(case, tmp_path, model):
    path, match = _corrupt_files(tmp_path, model)[case]
    with pytest.raises(BlendflagError, match=match):
        vgg16.load_model(path, precision="float32")


def test_bad_weights_on_the_command_line(detected, tmp_path, capsys):
    from tests.conftest import run_cli

    bad = tmp_path / "bad.npz"
    bad.write_text("garbage")
    code, _, err = run_cli(
        [
            "flag",
            detected["catalogue"],
            "--image",
            detected["image"],
            "--flaggers",
            "vgg16",
            "--weights",
            bad,
            "--out",
            tmp_path / "o.fits",
        ],
        capsys,
    )
    assert code == 2 and err.startswith("error: bad.npz is not a") and "Traceback" not in err
    assert not (tmp_path / "o.fits").exists()


def test_threshold_option_validated(model, tmp_path):
    path = save_weights(model, tmp_path / "w.npz", {"input_size": INPUT_SIZE, "threshold": 0.5})
    with pytest.raises(BlendflagError, match="threshold must be in"):
        VGG16Flagger({"weights": str(path), "threshold": 1.5})
    flagger = VGG16Flagger({"weights": str(path), "threshold": 0.7, "precision": "float32"})
    assert flagger.threshold == 0.7
    cards = dict((k, v) for k, v, _ in flagger.provenance())
    assert cards["BF_VGGTH"] == 0.7 and len(cards["BF_VGGSH"]) == 16


TINY = """method: vgg16
datasets: [great3, euclid]
n_train: 96
n_val: 48
epochs: 2
batch_size: 32
precision: float32
"""


def tiny_config(path, n_train: int, n_val: int, datasets: str, extra: str):
    """Write TINY with other set sizes and datasets plus ``extra`` lines; return the path."""
    text = (
        TINY.replace("n_train: 96", f"n_train: {n_train}")
        .replace("n_val: 48", f"n_val: {n_val}")
        .replace("datasets: [great3, euclid]", f"datasets: {datasets}")
    )
    path.write_text(text + extra + "\n")
    return path


@pytest.mark.slow
def test_training_runs_in_pieces_and_resumes(tmp_path, capsys):
    from tests.conftest import run_cli

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "w.npz"
    code, stdout, err = run_cli(
        ["train", "--config", cfg, "--out", out, "--max-minutes", "0.001", "--quiet"], capsys
    )
    assert code == 0, err
    assert "continue with --resume" in stdout and not out.exists()
    state = json.loads((tmp_path / "w.npz.run" / "state.json").read_text())
    assert state["epoch"] == 1 and (tmp_path / "w.npz.run" / "checkpoint.keras").exists()
    # starting again without --resume is refused, so a run is never silently restarted
    code, _, err = run_cli(["train", "--config", cfg, "--out", out, "--quiet"], capsys)
    assert code == 2 and "--resume" in err
    code, stdout, err = run_cli(
        ["train", "--config", cfg, "--out", out, "--resume", "--quiet"], capsys
    )
    assert code == 0, err
    state = json.loads((tmp_path / "w.npz.run" / "state.json").read_text())
    assert state["epoch"] == 2 and state["finished"]
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    _, meta = read_weights(out)
    assert 0 < meta["threshold"] < 1 and meta["training"]["n_train"] == 96
    assert set(meta["validation"]) >= {"blend_recall", "nonblend_recall", "auc"}


def test_metacal_mixture_replaces_a_fraction_with_metacal_images():
    """Replaced stamps are metacal images: same source, smoother (correlated) noise."""
    from blendflag.simulate.stamps import simulate_stamps
    from blendflag_plugins.nettrain import metacal_mixture

    stamps, truth = simulate_stamps("great3", 40, seed=5, noise=14.0)
    out, is_mcal = metacal_mixture(stamps, np.asarray(truth["NOISE_SIGMA"]), "great3", 0.5, 3)
    assert 8 < is_mcal.sum() < 32 and out.shape == stamps.shape and out.dtype == np.float32
    assert np.array_equal(out[~is_mcal], stamps[~is_mcal])  # the others are untouched

    def lag1(a):  # correlation of horizontally adjacent pixels of the 3-px frame rows
        rows = a[:, :3, :].reshape(-1, a.shape[-1])
        return float(np.corrcoef(rows[:, :-1].ravel(), rows[:, 1:].ravel())[0, 1])

    assert abs(lag1(stamps[is_mcal])) < 0.1 and lag1(out[is_mcal]) > 0.3
    # the source is still there: positive light in the central 11x11 px
    c0 = out[is_mcal][:, 20:31, 20:31].sum(axis=(1, 2))
    assert (c0 > 0).all()
    again, again_mcal = metacal_mixture(stamps, np.asarray(truth["NOISE_SIGMA"]), "great3", 0.5, 3)
    assert np.array_equal(again, out) and np.array_equal(again_mcal, is_mcal)  # seeded


def test_kind_fractions_shape_the_training_set_only(tmp_path):
    """More separated pairs in training; validation keeps the simulation's mix."""
    from blendflag_plugins.nettrain import prepare_data, simulate_mixture
    from blendflag_plugins.vgg16_train import load_train_config

    _, y, truth = simulate_mixture(["great3"], 100, 3, 14.0, fractions=[0.5, 0.1, 0.4])
    singles = truth["separation"] == 0
    assert singles.sum() == 10 and y.sum() == 50 and (y[singles] == 0).all()
    cfg = tiny_config(tmp_path / "mix.yaml", 40, 40, "[great3]", "kind_fractions: [0.5, 0.1, 0.4]")
    config = load_train_config(cfg)
    data = prepare_data(config, tmp_path, quiet=True)
    assert data["y_train"].sum() == 20 and data["y_val"].sum() == 20
    assert (data["sep_val"] == 0).sum() == 10  # a quarter singles, as evaluations have
    plain = load_train_config(cfg, {"kind_fractions": None})
    from blendflag_plugins.nettrain import _config_hash

    assert _config_hash(plain) != _config_hash(config)  # no stale cache across mixes


def test_dataset_shares_and_field_blends_shape_the_sets(tmp_path):
    """dataset_shares split both sets in proportion; field_blend_fraction raises
    the training set's share of survey blends while validation keeps the sky's."""
    from blendflag_plugins.nettrain import _config_hash, prepare_data
    from blendflag_plugins.vgg16_train import load_train_config

    extra = "dataset_shares: [1, 2]\nfield_blend_fraction: 0.5"
    cfg = tiny_config(tmp_path / "survey.yaml", 120, 150, "[great3, cfis_survey]", extra)
    config = load_train_config(cfg)
    data = prepare_data(config, tmp_path, quiet=True)
    assert np.bincount(data["dataset_val"]).tolist() == [50, 100]
    survey = data["dataset_val"] == 1
    # 100 survey validation stamps at the sky's share (5% blends on CFIS) against
    # 40 blends in training: the chance of 20 or more at 5% is below 1e-6
    assert data["y_val"][survey].sum() < 20
    train_blends = data["y_train"].sum() - 20  # the study's 40 stamps: half blends
    assert train_blends == 40
    unshared = load_train_config(cfg, {"dataset_shares": None})
    assert _config_hash(unshared) != _config_hash(config)


def test_threshold_rules_balanced_and_accuracy():
    """10 blends in 100 stamps, 2 of them at p = 0.4 with 10 singles: balanced
    accuracy (0.944 against 0.9) takes a threshold that catches them, accuracy
    (0.98 against 0.9) one above them."""
    from blendflag.flagging.metrics import choose_threshold

    p = np.r_[np.full(8, 0.9), np.full(2, 0.4), np.full(80, 0.1), np.full(10, 0.4)]
    y = np.r_[np.ones(10), np.zeros(90)]
    assert choose_threshold(p, y) <= 0.4
    assert 0.4 < choose_threshold(p, y, "accuracy") <= 0.9
    with pytest.raises(ValueError, match="rule"):
        choose_threshold(p, y, "f1")


@pytest.mark.parametrize("bad", ["[0.5, 0.5]", "[0.5, 0.6, -0.1]", "[0.5, 0.3, 0.3]"])
def test_kind_fractions_bad_values(tmp_path, capsys, bad):
    from tests.conftest import run_cli

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(TINY + f"kind_fractions: {bad}\n")
    code, _, err = run_cli(["train", "--config", cfg, "--out", tmp_path / "w.npz"], capsys)
    assert code == 2 and "kind_fractions" in err and "Traceback" not in err


@pytest.mark.slow
def test_fine_tuning_starts_from_init_weights(model, tmp_path, capsys):
    from blendflag_plugins.vgg16_train import initial_weights, load_train_config
    from tests.conftest import run_cli

    start = save_weights(model, tmp_path / "start.npz", {"input_size": INPUT_SIZE})
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(
        TINY.replace("epochs: 2", "epochs: 1")
        + f"init_weights: {start}\nmetacal_fraction: 0.5\nnoise: [5.0, 14.0]\n"
    )
    config = load_train_config(cfg)
    arrays = initial_weights(config)
    assert all(
        np.array_equal(a, b.astype(np.float16))
        for a, b in zip(arrays, model.get_weights(), strict=True)
    )
    assert len(initial_weights(load_train_config(cfg, {"init_weights": "shipped"}))) == len(arrays)
    out = tmp_path / "ft.npz"
    code, _, err = run_cli(["train", "--config", cfg, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    _, meta = read_weights(out)
    assert meta["training"]["init_weights"] == str(start)
    assert meta["training"]["metacal_fraction"] == 0.5
    parts = meta["validation"]
    assert parts["original"]["n"] + parts["metacal"]["n"] == 48
    assert parts["original"]["n"] > 0 and parts["metacal"]["n"] > 0


@pytest.mark.slow
def test_fine_tuning_to_a_smaller_input(model, tmp_path, capsys):
    """48-px weights start a 32-px network: the arrays fit, the result says 32 px."""
    from blendflag_plugins.vgg16_train import initial_weights, load_train_config
    from tests.conftest import run_cli

    start = save_weights(model, tmp_path / "start48.npz", {"input_size": INPUT_SIZE})
    cfg = tmp_path / "ft32.yaml"
    cfg.write_text(
        TINY.replace("epochs: 2", "epochs: 1")
        + f"init_weights: {start}\ninput_size: 32\nreference_channel: true\n"
    )
    assert len(initial_weights(load_train_config(cfg))) == len(model.get_weights())
    out = tmp_path / "ft32.npz"
    code, _, err = run_cli(["train", "--config", cfg, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    _, meta = read_weights(out)
    assert meta["input_size"] == 32 and meta["input_channels"] == ["noise", "reference", "noise"]
    flagger = VGG16Flagger({"weights": str(out), "precision": "float32", "reference_noise": 14.0})
    stamps = np.random.default_rng(0).normal(0, 5.0, (5, 51, 51)).astype(np.float32)
    p = flagger.predict_proba(stamps)
    assert p.shape == (5,) and np.all((p >= 0) & (p <= 1))


def test_init_weights_of_a_size_that_does_not_fit(tmp_path, capsys):
    """A 64-px network's head (2x2x512 inputs) cannot start a 32-px one: one line, exit 2."""
    from tests.conftest import run_cli

    start = save_weights(
        build_model(64, precision="float32"), tmp_path / "start64.npz", {"input_size": 64}
    )
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(TINY + f"init_weights: {start}\ninput_size: 32\n")
    out = tmp_path / "w.npz"
    code, _, err = run_cli(["train", "--config", cfg, "--out", out], capsys)
    assert code == 2 and "does not fit" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "w.npz.run").exists()


@pytest.mark.parametrize(
    "extra, match",
    [
        ("init_weights: nowhere.npz\n", "nowhere.npz"),
        ("metacal_fraction: 1.5\n", "metacal_fraction"),
        ("noise: [5.0, -2.0]\n", "noise"),
    ],
)
def test_fine_tuning_bad_settings(tmp_path, capsys, extra, match):
    from tests.conftest import run_cli

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(TINY + extra)
    code, _, err = run_cli(["train", "--config", cfg, "--out", tmp_path / "w.npz"], capsys)
    assert code == 2 and match in err and "Traceback" not in err
    assert not (tmp_path / "w.npz").exists()


def test_train_bad_config(tmp_path, capsys):
    from tests.conftest import run_cli

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("method: vgg16\nlearning_rate: 5\n")
    code, _, err = run_cli(["train", "--config", cfg, "--out", tmp_path / "w.npz"], capsys)
    assert code == 2 and "learning_rate" in err


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="shipped weights not built yet")
@pytest.mark.slow
def test_shipped_weights_accuracy_on_a_fixed_sample():
    """The shipped model on 300 seeded GREAT3-like stamps (a seed not used in training).

    The issue's floor, 0.95, at the preset's noise (14 ADU, the reference
    depth). Measured when the weights were shipped (2026-12-07, the survey
    fine-tuning of the one-run file, threshold 0.65): accuracy 0.953, blend
    recall 0.940, non-blend recall 0.967, the same labels in bfloat16 and
    float32 (probabilities differ by at most 0.009). One more error still
    passes (0.950), two fail it; one correctly called stamp lies 0.002 from
    the threshold, the next 0.10 (the one-run file, shipped before: 0.957;
    stage 6: 0.943; stage 4: 0.950; stage 1: 0.927).
    """
    from blendflag.simulate.stamps import simulate_stamps
    from blendflag_plugins.sextractor import SExtractorFlagger

    stamps, truth = simulate_stamps("great3", 300, seed=4242)
    labels = np.asarray(truth["LABEL"]) == 1
    result = VGG16Flagger({"reference_noise": 14.0}).flag_stamps(stamps)
    accuracy = (result.flag == labels).mean()
    assert accuracy >= 0.95
    assert ((result.probability >= 0) & (result.probability <= 1)).all()
    sextractor = (SExtractorFlagger({}).flag_stamps(stamps).flag == labels).mean()
    assert accuracy > sextractor + 0.15


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="shipped weights not built yet")
@pytest.mark.slow
def test_shipped_weights_work_on_metacal_images():
    """``compare`` selects on metacal images: the shipped model must find blends there.

    The same 300 stamps as above, each replaced by its noshear metacal image.
    Measured with the one-run file: accuracy 0.947, blend recall 0.960
    (stage 6: 0.940 and 0.947; stage 2: 0.903 and 0.947); the
    weights before the metacal
    fine-tuning gave 0.563 and 0.127 (they hardly ever called a metacal image a
    blend), which these floors reject.
    """
    from blendflag.config import load_pipeline_config
    from blendflag.shear.metacal_images import metacal_stamps
    from blendflag.simulate.galaxies import psf_image
    from blendflag.simulate.presets import load_dataset
    from blendflag.simulate.stamps import simulate_stamps
    from blendflag_plugins.metacal_galsim import GalSimMetacal

    stamps, truth = simulate_stamps("great3", 300, seed=4242)
    labels = np.asarray(truth["LABEL"]) == 1
    cfg = load_dataset("great3")
    images, rendered = metacal_stamps(
        GalSimMetacal,
        load_pipeline_config(None).shear,
        stamps,
        psf_image(cfg),
        cfg.pixel_scale,
        np.asarray(truth["NOISE_SIGMA"]),
        4242,
    )
    assert rendered.all()
    flag = VGG16Flagger({"reference_noise": 14.0}).flag_stamps(images).flag
    assert (flag == labels).mean() >= 0.80
    assert flag[labels].mean() >= 0.80 and (~flag[~labels]).mean() >= 0.75


@pytest.mark.slow
def test_bf16_and_float32_agree():
    """Mixed-precision inference gives the float32 labels (bf16: several times faster)."""
    from blendflag.simulate.stamps import simulate_stamps

    if not DEFAULT_WEIGHTS.exists():
        pytest.skip("shipped weights not built yet")
    stamps, _ = simulate_stamps("great3", 200, seed=4243)
    p32 = VGG16Flagger({"precision": "float32", "reference_noise": 14.0}).predict_proba(stamps)
    f16 = VGG16Flagger({"precision": "bfloat16", "reference_noise": 14.0})
    p16 = f16.predict_proba(stamps)
    assert np.abs(p32 - p16).max() < 0.05  # measured 0.0086 (one-run file; stage 6: 0.0091)
    th = f16.threshold
    clear = np.abs(p32 - th) > 0.05  # away from the threshold, labels must agree
    np.testing.assert_array_equal((p16 >= th)[clear], (p32 >= th)[clear])


def test_cosine_learning_rate_schedule(tmp_path):
    from blendflag.errors import ConfigError
    from blendflag_plugins.vgg16_train import cosine_learning_rate, load_train_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "method: vgg16\nepochs: 5\nlearning_rate: 1.0e-4\nlr_schedule: cosine\nlr_min: 1.0e-6\n"
    )
    config = load_train_config(cfg)
    rates = [cosine_learning_rate(config, e) for e in range(5)]
    assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1e-6)
    assert rates[2] == pytest.approx((1e-4 + 1e-6) / 2)
    assert np.all(np.diff(rates) < 0)
    cfg.write_text("method: vgg16\nlr_schedule: step\n")
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_train_config(cfg)
    cfg.write_text("method: vgg16\nlr_min: 1.0\n")
    with pytest.raises(ConfigError, match="lr_min"):
        load_train_config(cfg)


def test_preprocess_reference_plane():
    """With a reference sigma the planes are [noise, reference, noise]; the reference
    plane keeps the ADU scale the blend label is defined at."""
    from blendflag_plugins.nettrain import network_input

    rng = np.random.default_rng(3)
    stamps = rng.normal(0, 5.0, (4, 51, 51)).astype(np.float32)
    stamps[:, 25, 25] += 500
    x = preprocess(stamps, channels=3, reference_sigma=14.0)
    assert x.shape == (4, INPUT_SIZE, INPUT_SIZE, 3)
    np.testing.assert_array_equal(x[..., 0], preprocess(stamps)[..., 0])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    np.testing.assert_allclose(
        x[..., 1], np.arcsinh(crop_center(stamps) / 14.0) / 3.0, rtol=1e-5, atol=1e-6
    )
    # the noise plane ignores the ADU scale, the reference plane does not
    y = preprocess(10 * stamps, channels=3, reference_sigma=14.0)
    np.testing.assert_allclose(y[..., 0], x[..., 0], atol=1e-5)
    assert y[..., 1].max() > x[..., 1].max() + 0.5
    # one sigma per stamp; the reference equal to the stamp's own sigma repeats the noise plane
    own = stamp_noise_sigma(stamps)
    z = preprocess(stamps, channels=3, reference_sigma=own)
    np.testing.assert_allclose(z[..., 1], z[..., 0], atol=1e-6)
    # the trainer stores two planes and expands them as the flagger does
    two = preprocess(stamps, channels=2, reference_sigma=14.0)
    np.testing.assert_array_equal(network_input(two, 3), x)
    np.testing.assert_array_equal(
        network_input(preprocess(stamps), 3), preprocess(stamps, channels=3)
    )
    for bad in (0.0, -1.0, np.nan):
        with pytest.raises(BlendflagError, match="reference noise sigma"):
            preprocess(stamps, channels=3, reference_sigma=bad)


def test_reference_weights_use_the_reference_noise(model, tmp_path):
    """A file with a reference plane: the flagger feeds it the reference depth
    (option or per call), records it in the header, and falls back to each
    stamp's own noise; a file without one ignores it."""
    from blendflag_plugins.netcore import REFERENCE_LAYOUT

    path = save_weights(
        model,
        tmp_path / "ref.npz",
        {"input_size": INPUT_SIZE, "threshold": 0.5, "input_channels": REFERENCE_LAYOUT},
    )
    rng = np.random.default_rng(4)
    stamps = rng.normal(0, 5.0, (8, 51, 51)).astype(np.float32)
    stamps[:, 22:29, 22:29] += rng.uniform(50, 500, (8, 1, 1)).astype(np.float32)
    base = {"weights": str(path), "precision": "float32"}
    own = VGG16Flagger(base)
    at14 = VGG16Flagger(base | {"reference_noise": 14.0})
    p_own, p14 = own.predict_proba(stamps), at14.predict_proba(stamps)
    assert not np.allclose(p_own, p14)
    np.testing.assert_allclose(own.predict_proba(stamps, reference_sigma=14.0), p14, rtol=1e-5)
    np.testing.assert_allclose(
        at14.predict_proba(stamps, reference_sigma=stamp_noise_sigma(stamps)), p_own, rtol=1e-5
    )
    cards = {k: v for k, v, _ in at14.provenance()}
    assert cards["BF_VGGRN"] == 14.0
    assert {k: v for k, v, _ in own.provenance()}["BF_VGGRN"] == "stamp"
    plain = save_weights(model, tmp_path / "plain.npz", {"input_size": INPUT_SIZE})
    old = VGG16Flagger({"weights": str(plain), "precision": "float32", "reference_noise": 14.0})
    np.testing.assert_allclose(
        old.predict_proba(stamps),
        VGG16Flagger({"weights": str(plain), "precision": "float32"}).predict_proba(stamps),
    )
    assert "BF_VGGRN" not in {k for k, _, _ in old.provenance()}


@pytest.mark.slow
def test_training_with_a_reference_plane(tmp_path, capsys):
    """reference_channel: the cache holds two planes, the file records its input layout."""
    from blendflag_plugins.nettrain import simulate_mixture
    from tests.conftest import run_cli

    _, _, truth = simulate_mixture(["great3"], 8, seed=3, noise=[5.0, 40.0])
    np.testing.assert_array_equal(truth["reference_sigma"], 14.0)  # the preset's default noise
    cfg = tmp_path / "ref.yaml"
    cfg.write_text(TINY.replace("epochs: 2", "epochs: 1") + "reference_channel: true\n")
    out = tmp_path / "ref.npz"
    code, _, err = run_cli(["train", "--config", cfg, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    _, meta = read_weights(out)
    assert meta["input_channels"] == ["noise", "reference", "noise"]
    assert meta["training"]["reference_channel"] is True
    (cache,) = (tmp_path / "ref.npz.run").glob("data-*.npz")
    with np.load(cache) as data:
        assert data["x_train"].shape[-1] == 2


def test_truth_reference_noise():
    """evaluate takes the labels' depth from the truth: one isophote for every stamp."""
    from astropy.table import Table

    from blendflag.flagging.evaluation import truth_reference_noise
    from blendflag.simulate.stamps import simulate_stamps

    _, truth = simulate_stamps("great3", 12, seed=6, noise="grid")
    assert len(set(np.asarray(truth["NOISE_SIGMA"]))) > 1
    assert truth_reference_noise(truth) == pytest.approx(14.0)
    # labels at each stamp's own noise (isophote_reference: stamp_noise)
    per_stamp = Table({"ISOPHOTE": [5.0, 14.0]}, meta={"ISOSIG": 1.0})
    assert truth_reference_noise(per_stamp) is None
    assert truth_reference_noise(Table({"LABEL": [1, 0]})) is None


@pytest.mark.parametrize("bad", ["deep", 0, -3.0, float("nan")])
def test_bad_reference_noise_option(bad):
    with pytest.raises(BlendflagError, match="reference_noise must be a positive"):
        VGG16Flagger({"reference_noise": bad})


def test_packaged_vgg16_training_configs_are_valid():
    """Every stage's config (configs/history/) loads and validates; the 32-px
    stages start from a 48-px file; the flagger ships the one-run recipe."""
    from pathlib import Path

    from blendflag_plugins.vgg16_train import load_train_config

    paths = sorted((Path(__file__).parents[1] / "configs" / "history").glob("train_vgg16*.yaml"))
    assert len(paths) >= 7
    sizes = {p.stem: load_train_config(p).input_size for p in paths}
    assert sizes["train_vgg16"] == 48 and sizes["train_vgg16_32px"] == 32
    assert load_train_config(
        paths[0].parent / "train_vgg16_32px_separated.yaml"
    ).kind_fractions == [0.5, 0.1, 0.4]
    shipped = VGG16Flagger.training_config_path()
    assert VGG16Flagger.trainable and shipped.name == "train_vgg16_onerun.yaml"
    onerun = load_train_config(shipped)
    # stage 1 of the shipped file's recipe; stage 2 fine-tunes its output on survey stamps
    assert onerun.init_weights is None and onerun.input_size == 32
    finetune = load_train_config(shipped.parent / "train_vgg16_survey_finetune.yaml")
    assert finetune.init_weights == "vgg16_onerun.npz" and finetune.count_head


def test_dihedral_views_are_the_eight_symmetries():
    from blendflag_plugins.netcore import dihedral_view, view_indices

    x = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
    views = [dihedral_view(x, k) for k in range(8)]
    assert len({v.tobytes() for v in views}) == 8
    np.testing.assert_array_equal(views[0], x)
    np.testing.assert_array_equal(views[2], x[:, ::-1, ::-1])  # 180 degrees
    np.testing.assert_array_equal(views[4], x[:, :, ::-1])  # left-right flip
    round_blob = np.exp(-(np.hypot(*np.mgrid[-2:3, -2:3]) ** 2))[None, :, :, None]
    for k in range(8):
        np.testing.assert_allclose(dihedral_view(round_blob, k), round_blob)
    assert [len(view_indices(n)) for n in (1, 2, 4, 8)] == [1, 2, 4, 8]


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="shipped weights not built yet")
def test_views_average_the_probability_over_symmetries():
    """``views: 8`` equals the mean of the single-view probabilities of the 8 symmetric stamps.

    Stamps cut to the network's input size (32 px), so that the centre crop
    does not shift under rotation; the shipped weights, so that the views do
    give different probabilities.
    """
    from blendflag.simulate.stamps import simulate_stamps
    from blendflag_plugins.netcore import dihedral_view as dihedral  # tested above

    stamps, _ = simulate_stamps("great3", 24, seed=4244)
    stamps = np.ascontiguousarray(stamps[:, 9:41, 9:41])
    options = {"precision": "float32", "reference_noise": 14.0}
    single = VGG16Flagger(options)
    assert single.metadata["input_size"] == stamps.shape[1]
    expected = np.mean([single.predict_proba(dihedral(stamps, k)) for k in range(8)], axis=0)
    averaged = VGG16Flagger({**options, "views": 8})
    np.testing.assert_allclose(averaged.predict_proba(stamps), expected, atol=1e-5)
    assert np.abs(single.predict_proba(stamps) - expected).max() > 1e-3  # views differ
    assert dict((k, v) for k, v, _ in averaged.provenance())["BF_VGGNV"] == 8


@pytest.mark.parametrize("bad", [3, 0, True, "8"])
def test_bad_views_option(bad):
    with pytest.raises(BlendflagError, match="views must be one of 1, 2, 4, 8"):
        VGG16Flagger({"views": bad})


def test_evaluate_views_on_the_command_line(tmp_path, capsys):
    from tests.conftest import run_cli

    out = tmp_path / "e.json"
    code, _, err = run_cli(
        [
            "evaluate",
            "--dataset",
            "great3",
            "--n",
            "12",
            "--seed",
            "5",
            "--methods",
            "vgg16",
            "--views",
            "2",
            "--quiet",
            "--json",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    vgg16 = json.loads(out.read_text())["methods"]["vgg16"]
    assert vgg16["views"] == 2
    # the JSON names the weights it measured: file and SHA-256, as the catalogue's cards
    from blendflag_plugins.netweights import file_sha256

    assert vgg16["setup"]["BF_VGGW"] == DEFAULT_WEIGHTS.name
    assert vgg16["setup"]["BF_VGGSH"] == file_sha256(DEFAULT_WEIGHTS)[:16]
    assert vgg16["setup"]["BF_VGGNV"] == 2
    with pytest.raises(SystemExit) as exc:  # argparse: usage and a one-line error
        run_cli(
            ["evaluate", "--dataset", "great3", "--n", "12", "--methods", "vgg16", "--views", "3"],
            capsys,
        )
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--views" in err and "Traceback" not in err


def test_flag_views_on_the_command_line(detected, tmp_path, capsys):
    """``flag --views 2``: the header records the views, and the probabilities differ."""
    from astropy.io import fits

    from tests.conftest import run_cli

    outs = {}
    for views in (1, 2):
        out = tmp_path / f"v{views}.fits"
        code, _, err = run_cli(
            [
                "flag",
                detected["catalogue"],
                "--image",
                detected["image"],
                "--flaggers",
                "vgg16",
                "--views",
                views,
                "--out",
                out,
            ],
            capsys,
        )
        assert code == 0, err
        with fits.open(out) as hdul:
            assert hdul["LDAC_OBJECTS"].header["BF_VGGNV"] == views
            outs[views] = np.array(hdul["LDAC_OBJECTS"].data["P_BLEND_VGG16"])
    assert outs[1].shape == outs[2].shape and not np.allclose(outs[1], outs[2])
