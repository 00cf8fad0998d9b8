"""Source counts: field-stamp labels, the VGG16 count head, NSRC columns and count metrics."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from blendflag.flagging.evaluation import count_metrics, false_blends_by_size
from blendflag.simulate.field_stamps import count_class

keras = pytest.importorskip("keras")


def test_count_classes_of_source_numbers():
    np.testing.assert_array_equal(count_class([1, 2, 3, 4, 5, 9]), [0, 1, 2, 3, 3, 3])


def test_field_stamp_labels_are_the_truth_overlap_counts():
    """A hand-built truth table: each stamp's count is 1 + its galaxy's overlaps
    with visible sources, its separation the distance to the visible galaxy it
    overlaps most; N_SOURCES_ALL counts the invisible ones too."""
    from astropy.table import Table

    from blendflag.simulate.field_stamps import _stamp_truth
    from blendflag.simulate.presets import load_dataset

    truth = Table()
    truth["X"] = [10.0, 13.0, 40.0, 42.0, 45.0, 90.0]
    truth["Y"] = [10.0, 14.0, 40.0, 40.0, 40.0, 90.0]
    truth["N_OVERLAPS"] = [1, 1, 2, 3, 2, 0]  # 4 overlaps 3 and 5 and a star
    truth["OVERLAPS"] = [1, 0, 3, 2, 3, -1]
    truth["N_OVERLAPS_VISIBLE"] = [1, 1, 2, 2, 2, 0]  # the star under the noise
    truth["OVERLAPS_VISIBLE"] = [1, 0, 3, 4, 3, -1]
    truth["FLUX"] = [1000.0] * 6
    truth["HLR"] = [0.3, 0.5, 0.2, 0.6, 0.4, 0.45]
    config = load_dataset("cfis_survey")
    field = SimpleNamespace(truth=truth, seed=7)
    rows = np.array([0, 3, 5])
    out = _stamp_truth(field, rows, truth["X"][rows], truth["Y"][rows], config, 42.0)
    np.testing.assert_array_equal(out["N_SOURCES"], [2, 3, 1])
    np.testing.assert_array_equal(out["N_SOURCES_ALL"], [2, 4, 1])
    np.testing.assert_array_equal(out["COUNT_CLASS"], [1, 2, 0])
    np.testing.assert_array_equal(out["LABEL"], [1, 1, 0])
    np.testing.assert_allclose(out["SEPARATION"], [5.0, 3.0, 0.0])
    np.testing.assert_allclose(out["HLR1"], [0.3, 0.6, 0.45])


def test_field_stamps_follow_their_fields_truth():
    """Simulated CFIS fields: every stamp is centred on a detection matched to a
    galaxy, and its count is that galaxy's overlaps in the field's own truth."""
    from functools import partial

    from blendflag.flagging.detectors import detect_with_plugins
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.field_stamps import _density, simulate_field_stamps
    from blendflag.simulate.presets import load_dataset

    detect = partial(detect_with_plugins, config=None)
    stamps, truth = simulate_field_stamps("cfis_survey", 60, 3, detect, workers=1, field_side=256)
    assert stamps.shape == (60, 51, 51) and len(truth) == 60
    seed = int(truth["FIELD_SEED"][0])
    rows = truth["FIELD_SEED"] == seed
    config = load_dataset("cfis_survey")
    rng = np.random.default_rng([seed, 0x6E6F])  # the field's Poisson number, as drawn
    n_gal = max(1, int(rng.poisson(_density(config) * (256 * config.pixel_scale / 60) ** 2)))
    field = simulate_field("cfis_survey", n_galaxies=n_gal, seed=seed, noise=0, size=256, margin=2)
    ft = field.truth
    for row in truth[rows]:
        d = np.hypot(ft["X"] - row["X"], ft["Y"] - row["Y"])
        j = int(np.argmin(d))
        assert d[j] <= 3.0
        assert row["N_SOURCES"] == 1 + ft["N_OVERLAPS_VISIBLE"][j]
        assert row["N_SOURCES_ALL"] == 1 + ft["N_OVERLAPS"][j]
        assert row["HLR1"] == pytest.approx(ft["HLR"][j])
    assert np.isfinite(stamps).all()


def test_invisible_sources_make_no_visible_overlap():
    """Three overlapping footprints, the middle source under min_snr: at the
    label's depth each overlaps the others; among visible sources the bright
    two overlap only each other and the faint one nothing."""
    from blendflag.simulate.field_truth import blend_overlaps

    square = np.ones((4, 4), dtype=bool)
    footprints = [(1, 1, square), (3, 1, square), (4, 1, square)]
    signals = [500.0, 100.0, 400.0]  # min_signal 5 x 42 = 210 ADU
    best, count, _, _, best_vis, count_vis = blend_overlaps(
        footprints, None, signals, 3, (10, 10), 210.0
    )
    np.testing.assert_array_equal(count, [2, 2, 2])
    np.testing.assert_array_equal(count_vis, [1, 0, 1])
    np.testing.assert_array_equal(best_vis, [2, -1, 0])
    assert best[0] == 1  # overlapping most: 2 columns against 1


def test_single_output_weights_start_a_count_head_network():
    """Fine-tuning a single-output network into a count-head one: every shared
    layer takes its weights (same blend probability), the new head its own."""
    from blendflag_plugins.vgg16_model import build_model
    from blendflag_plugins.vgg16_train import with_new_count_head

    single = build_model(32, "float32")
    arrays = single.get_weights()
    counting = build_model(32, "float32", count_classes=4)
    own_head = [w.copy() for w in counting.get_weights()[-2:]]
    counting.set_weights(with_new_count_head(counting, arrays))
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
    p_count, n_sources = counting.predict(x, verbose=0)
    np.testing.assert_allclose(p_count, single.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    assert n_sources.shape == (4, 4)
    for new, old in zip(counting.get_weights()[-2:], own_head, strict=True):
        np.testing.assert_array_equal(new, old)


def test_count_head_file_starts_a_single_output_network(tmp_path):
    """The other way: a count-head weights file gives a single-output config
    every layer but the head."""
    from blendflag_plugins.vgg16_model import build_model, save_weights
    from blendflag_plugins.vgg16_train import initial_weights, load_train_config

    counting = build_model(32, "float32", count_classes=4)
    path = save_weights(counting, tmp_path / "c.npz", {"input_size": 32, "count_classes": 4})
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"method: vgg16\ninput_size: 32\ninit_weights: {path}\n")
    arrays = initial_weights(load_train_config(cfg))
    own = counting.get_weights()
    assert len(arrays) == len(own) - 2
    assert all(
        np.array_equal(a, b.astype(np.float16)) for a, b in zip(arrays, own[:-2], strict=True)
    )
    with_head = initial_weights(load_train_config(cfg, {"count_head": True}))
    assert len(with_head) == len(own)


def test_count_head_model_and_nsrc(tmp_path):
    """A count-head weights file: flag_stamps gives NSRC in 1..4 and the same
    blend probability as the single-output part of the network."""
    from blendflag_plugins.vgg16 import VGG16Flagger, build_model, save_weights

    model = build_model(32, precision="float32", count_classes=4)
    assert len(model.outputs) == 2
    path = save_weights(model, tmp_path / "c.npz", {"input_size": 32, "count_classes": 4})
    rng = np.random.default_rng(2)
    stamps = rng.normal(0, 5.0, (10, 51, 51)).astype(np.float32)
    flagger = VGG16Flagger({"weights": str(path), "precision": "float32"})
    result = flagger.flag_stamps(stamps)
    assert result.n_sources.dtype == np.int16
    assert set(np.unique(result.n_sources)) <= {1, 2, 3, 4}
    p, counts = flagger.predict(stamps)
    np.testing.assert_allclose(counts.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result.n_sources > 1, result.flag)  # gated: the default
    np.testing.assert_allclose(result.probability, p)
    assert flagger.count_column == "NSRC_VGG16"
    argmax = VGG16Flagger({"weights": str(path), "precision": "float32", "count_rule": "argmax"})
    np.testing.assert_array_equal(argmax.flag_stamps(stamps).n_sources, np.argmax(counts, 1) + 1)


def test_count_rules_on_hand_set_probabilities(tmp_path):
    """gated: 1 where the flag is off, else the most probable of 2, 3, 4+;
    argmax: the most probable class; an unknown rule is one error."""
    from blendflag.errors import BlendflagError
    from blendflag_plugins.vgg16 import VGG16Flagger, build_model, save_weights

    model = build_model(32, precision="float32", count_classes=4)
    path = save_weights(model, tmp_path / "c.npz", {"input_size": 32, "count_classes": 4})
    counts = np.array(
        [[0.7, 0.2, 0.1, 0.0], [0.7, 0.1, 0.2, 0.0], [0.1, 0.6, 0.2, 0.1], [0.4, 0.1, 0.1, 0.4]]
    )
    flag = np.array([False, True, False, True])
    gated = VGG16Flagger({"weights": str(path)})
    np.testing.assert_array_equal(gated.source_counts(counts, flag), [1, 3, 1, 4])
    argmax = VGG16Flagger({"weights": str(path), "count_rule": "argmax"})
    np.testing.assert_array_equal(argmax.source_counts(counts, flag), [1, 1, 2, 1])
    with pytest.raises(BlendflagError, match="count_rule must be one of gated, argmax"):
        VGG16Flagger({"weights": str(path), "count_rule": "prior"})


def test_nsrc_column_written_without_touching_any_other(detected, tmp_path, capsys):
    from astropy.io import fits

    from blendflag_plugins.vgg16 import build_model, save_weights
    from tests.conftest import run_cli

    path = save_weights(
        build_model(32, precision="float32", count_classes=4),
        tmp_path / "c.npz",
        {"input_size": 32, "count_classes": 4, "threshold": 0.5},
    )
    out = tmp_path / "flagged.fits"
    code, _, err = run_cli(
        [
            "flag",
            detected["catalogue"],
            "--image",
            detected["image"],
            "--flaggers",
            "vgg16",
            "--weights",
            path,
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    with fits.open(detected["catalogue"]) as before, fits.open(out) as after:
        old, new = before["LDAC_OBJECTS"].data, after["LDAC_OBJECTS"].data
        added = set(new.columns.names) - set(old.columns.names)
        assert {"NSRC_VGG16", "P_BLEND_VGG16", "BLEND_VGG16"} <= added
        assert added <= {"NSRC_VGG16", "P_BLEND_VGG16", "BLEND_VGG16", "STAMP_FLAGS"}
        for name in old.columns.names:
            np.testing.assert_array_equal(new[name], old[name])
        assert set(np.unique(new["NSRC_VGG16"])) <= {1, 2, 3, 4}


def test_weights_threshold_is_not_rechosen_by_evaluate(tmp_path, capsys):
    """The threshold stored in the weights (chosen on training data) is the one
    evaluate applies, whatever the evaluation seed."""
    from blendflag_plugins.vgg16 import build_model, save_weights
    from tests.conftest import run_cli

    path = save_weights(
        build_model(32, precision="float32", count_classes=4),
        tmp_path / "c.npz",
        {"input_size": 32, "count_classes": 4, "threshold": 0.37},
    )
    for seed in (5, 6):
        out = tmp_path / f"e{seed}.json"
        code, _, err = run_cli(
            [
                "evaluate",
                "--dataset",
                "great3",
                "--n",
                "16",
                "--seed",
                seed,
                "--methods",
                "vgg16",
                "--weights",
                path,
                "--quiet",
                "--json",
                out,
            ],
            capsys,
        )
        assert code == 0, err
        method = json.loads(out.read_text())["methods"]["vgg16"]
        assert method["threshold"] == pytest.approx(0.37)
        assert len(method["count"]["confusion"]) == 4


def test_count_metrics_by_hand():
    m = count_metrics([1, 1, 2, 2, 3, 4, 6], [0, 1, 1, 1, 2, 3, 2])
    assert m["counts"][1] == [1, 2, 0, 0]
    assert m["confusion"][1] == pytest.approx([1 / 3, 2 / 3, 0, 0])
    assert m["confusion"][2] == pytest.approx([0, 0, 0.5, 0.5])  # 6 sources is class 4+
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["balanced_accuracy"] == pytest.approx((1 + 2 / 3 + 0.5 + 1) / 4)
    empty = count_metrics([1], [0])
    assert empty["confusion"][3] is None and empty["balanced_accuracy"] == 1.0


def test_false_blends_by_size_by_hand():
    bins = false_blends_by_size(
        [True, False, True, True, False, True], [0, 0, 0, 1, 0, 0], [0.1, 0.2, 0.3, 0.3, 0.5, 0.6]
    )
    assert [b["n"] for b in bins] == [1, 1, 1, 2]
    assert [b["flagged"] for b in bins] == [1.0, 0.0, 1.0, 0.5]
    assert bins[3]["flagged_err"] == pytest.approx(0.5 / np.sqrt(2))


def _gaussians(centres, flux=4000.0, sigma_px=2.0, noise=5.0, seed=1):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:51, 0:51]
    img = rng.normal(0, noise, (51, 51))
    for cx, cy in centres:
        img += (
            flux
            / (2 * np.pi * sigma_px**2)
            * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma_px**2))
        )
    return img.astype(np.float32)


def test_sep_deblended_count_on_hand_built_stamps():
    """One galaxy: 1; two touching ones split by the deblender: 2; three: 3; a
    far, detached neighbour is not counted."""
    from blendflag_plugins.stamp_detect import classify_stamps

    stamps = np.stack(
        [
            _gaussians([(25, 25)]),
            _gaussians([(25, 25), (31, 25)]),
            _gaussians([(25, 25), (31, 25), (28, 30)]),
            _gaussians([(25, 25), (45, 45)]),
        ]
    )
    result = classify_stamps(stamps, noise_sigma=5.0)
    np.testing.assert_array_equal(result.n_sources, [1, 2, 3, 1])
    np.testing.assert_array_equal(result.flag, [False, True, True, False])


def test_evaluate_prints_the_count_matrix_of_field_stamps(capsys):
    from tests.conftest import run_cli

    code, out, err = run_cli(
        [
            "evaluate",
            "--dataset",
            "lsst_y10",
            "--n",
            "40",
            "--seed",
            "3",
            "--methods",
            "sextractor",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    assert "sextractor: source counts" in out and "4+" in out
    assert "by half-light radius" in out
    code, _, err = run_cli(
        ["evaluate", "--dataset", "lsst_y10", "--n", "4", "--noise", "3", "--quiet"], capsys
    )
    assert code == 2 and err.startswith("error:") and "--stamps pairs" in err


@pytest.mark.slow
def test_simulate_writes_field_stamps_that_evaluate_reads(tmp_path, capsys):
    """`simulate --stamps field` writes the held-out survey stamps once (labels,
    counts, the config of their depth); `evaluate --data` reads them back with the
    same numbers as from the simulation itself; wrong combinations are refused."""
    from blendflag.simulate.stamps import read_stamps
    from tests.conftest import run_cli

    out = tmp_path / "held.fits"
    args = ["simulate", "--dataset", "cfis_survey", "--n", "40", "--seed", "3", "--quiet"]
    code, text, err = run_cli([*args, "--workers", "1", "--out", str(out)], capsys)
    assert code == 0, err
    stamps, truth, config = read_stamps(out)
    assert stamps.shape == (40, config.stamp_size, config.stamp_size)
    np.testing.assert_array_equal(truth["COUNT_CLASS"], count_class(truth["N_SOURCES"]))
    np.testing.assert_array_equal(truth["LABEL"], (truth["N_SOURCES"] >= 2).astype(int))
    assert f"{int(np.sum(truth['LABEL']))} blends" in text
    evaluate = ["evaluate", "--methods", "sextractor", "--quiet"]
    _, from_file, _ = run_cli([*evaluate, "--data", str(out)], capsys)
    _, from_sim, _ = run_cli(
        [*evaluate, "--dataset", "cfis_survey", "--n", "40", "--seed", "3"], capsys
    )
    strip = [line.split()[:4] for line in from_file.splitlines() if line.startswith("sextractor ")]
    assert strip == [
        line.split()[:4] for line in from_sim.splitlines() if line.startswith("sextractor ")
    ]
    for bad, message in (
        (["--noise", "grid"], "one noise"),
        (["--fractions", "0.4,0.3,0.3"], "--blend-fraction"),
    ):
        code, _, err = run_cli([*args, *bad, "--out", str(tmp_path / "x.fits")], capsys)
        assert code == 2 and err.startswith("error:") and message in err
        assert not (tmp_path / "x.fits").exists()
    code, _, err = run_cli(
        [
            "simulate",
            "--dataset",
            "great3",
            "--n",
            "4",
            "--seed",
            "3",
            "--blend-fraction",
            "0.5",
            "--out",
            str(tmp_path / "y.fits"),
        ],
        capsys,
    )
    assert code == 2 and "--stamps field" in err


#: The shipped VGG16 and sep on 300 held-out LSST-Y10 field stamps (seed 4242,
#: the sky's share of blends with visible neighbours: 49 blends, 251 isolated),
#: measured when the survey fine-tuned weights were shipped (2026-12-07,
#: bfloat16 on an AVX512-BF16 CPU; the one-run file before them: 36 and 19):
#: (blends flagged, blends), (isolated flagged, isolated), and sep's 4x4 count
#: confusion (rows: true 1, 2, 3, 4+; columns: counted).
STORED_VGG16 = {"blend": (32, 49), "isolated": (6, 251)}
STORED_SEP_COUNTS = [[249, 2, 0, 0], [29, 6, 0, 0], [10, 0, 0, 0], [4, 0, 0, 0]]


@pytest.mark.slow
def test_shipped_weights_reproduce_their_stored_survey_confusion():
    """The shipped weights load and give the stored confusion on survey-sky stamps,
    each rate within three binomial errors (bfloat16 on another CPU may move a
    stamp near the threshold); sep's count, which has no such rounding, exactly."""
    from functools import partial

    from blendflag.flagging.detectors import detect_with_plugins
    from blendflag.flagging.evaluation import evaluate_flaggers
    from blendflag.simulate.field_stamps import simulate_field_stamps
    from blendflag.simulate.galaxies import label_reference_noise
    from blendflag.simulate.presets import load_dataset
    from blendflag_plugins.sextractor import SExtractorFlagger
    from blendflag_plugins.vgg16 import DEFAULT_WEIGHTS, VGG16Flagger

    assert DEFAULT_WEIGHTS.exists()
    detect = partial(detect_with_plugins, config=None)
    stamps, truth = simulate_field_stamps("lsst_y10", 300, 4242, detect, workers=1)
    label = np.asarray(truth["LABEL"]) > 0
    assert (int(label.sum()), int((~label).sum())) == (49, 251)
    reference = label_reference_noise(load_dataset("lsst_y10"))
    flaggers = [VGG16Flagger({}), SExtractorFlagger({"backend": "sep"})]
    methods = evaluate_flaggers(flaggers, stamps, truth, reference)["methods"]
    flag = VGG16Flagger({"reference_noise": reference}).flag_stamps(stamps).flag
    for name, chosen in (("blend", label), ("isolated", ~label)):
        flagged, n = STORED_VGG16[name]
        stored = flagged / n
        error = np.sqrt(stored * (1 - stored) / n)
        assert abs(flag[chosen].mean() - stored) <= 3 * error + 1e-12, name
    assert methods["vgg16"]["confusion"][0][0] == pytest.approx(flag[label].mean())
    assert methods["sextractor"]["count"]["counts"] == STORED_SEP_COUNTS
