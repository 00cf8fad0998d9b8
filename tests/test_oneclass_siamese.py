"""The one-class (Deep SVDD) and Siamese flaggers: trained, used, refused when wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blendflag_plugins.oneclass import OneClassFlagger, build_autoencoder
from blendflag_plugins.siamese import build_embedding, prototype_probability
from tests.conftest import run_cli

pytest.importorskip("keras")

TINY = {
    "oneclass": "method: oneclass\nn_train: 160\nn_val: 80\nepochs: 1\nbatch_size: 32\n",
    "siamese": "method: siamese\nn_train: 160\nn_val: 80\nepochs: 1\nbatch_size: 32\n"
    "n_reference: 10\n",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from blendflag.cli import main

    tmp = tmp_path_factory.mktemp("nets")
    out = {}
    for method, text in TINY.items():
        cfg = tmp / f"{method}.yaml"
        cfg.write_text(text)
        out[method] = tmp / f"{method}.npz"
        assert (
            main(
                [
                    "train",
                    "--method",
                    method,
                    "--config",
                    str(cfg),
                    "--out",
                    str(out[method]),
                    "--quiet",
                ]
            )
            == 0
        )
    return out


def test_autoencoder_scores_the_central_region():
    import keras

    ae = build_autoencoder()
    x = np.random.default_rng(0).normal(size=(2, 48, 48, 1)).astype("f4")
    err, recon, score = (np.asarray(t) for t in ae(x))
    assert score.shape == (2,) and (score < err).all()  # smoothing averages the noise down
    assert recon.shape == (2, 24, 24, 1) and err.shape == (2,)
    centre = x[:, 12:36, 12:36, :]
    np.testing.assert_allclose(err, ((centre - recon) ** 2).mean(axis=(1, 2, 3)), rtol=1e-4)
    x2 = x.copy()
    x2[:, :5, :5] += 100  # outside the central region: no effect on the score
    np.testing.assert_allclose(np.asarray(ae(x2)[0]), err, rtol=1e-5)
    assert isinstance(ae, keras.Model)


def test_siamese_embedding_is_unit_norm_and_prototypes_decide():
    net = build_embedding()
    emb = np.asarray(net(np.random.default_rng(0).normal(size=(3, 48, 48, 1)).astype("f4")))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)
    pb, pn = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    p = prototype_probability(np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]]), pb, pn, 0.1)
    assert p[0] > 0.9 and p[1] < 0.1 and p[2] == pytest.approx(0.5)


@pytest.mark.slow
def test_both_run_in_evaluate(trained, tmp_path, capsys):
    out = tmp_path / "e.json"
    code, _, err = run_cli(
        [
            "evaluate",
            "--dataset",
            "great3",
            "--n",
            "60",
            "--seed",
            "2",
            "--quiet",
            "--methods",
            "oneclass,siamese,sextractor",
            "--json",
            out,
            "--weights",
            f"oneclass={trained['oneclass']},siamese={trained['siamese']}",
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"oneclass", "siamese", "sextractor"}
    for name in ("oneclass", "siamese"):
        assert 0 <= data["methods"][name]["auc"] <= 1


@pytest.mark.slow
def test_flag_catalogue_with_oneclass(trained, detected, tmp_path, capsys):
    from blendflag.io.catalog import read_catalogue

    out = tmp_path / "f.fits"
    code, _, err = run_cli(
        [
            "flag",
            detected["catalogue"],
            "--image",
            detected["image"],
            "--flaggers",
            "oneclass",
            "--weights",
            trained["oneclass"],
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    cat = read_catalogue(out)
    p = cat.column("P_BLEND_ONECLASS")
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_array_equal(cat.column("BLEND_ONECLASS"), p >= 0.5)


@pytest.mark.slow
def test_weights_of_another_method_are_refused(trained):
    from blendflag.errors import BlendflagError

    with pytest.raises(BlendflagError, match="not a blendflag oneclass weights file"):
        OneClassFlagger({"weights": str(trained["siamese"])})


def test_train_method_and_config_must_agree(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY["siamese"])
    code, _, err = run_cli(
        ["train", "--method", "oneclass", "--config", cfg, "--out", tmp_path / "x.npz"], capsys
    )
    assert code == 2 and "configures method 'siamese'" in err


@pytest.mark.parametrize("method", ["oneclass", "siamese"])
def test_each_ships_its_training_config(method):
    """``train --method NAME`` without --config uses the flagger's own config."""
    from blendflag.plugins import get_flaggers, get_plugin_manager
    from blendflag_plugins import nettrain, oneclass, siamese

    cls = get_flaggers(get_plugin_manager())[method]
    path = cls.training_config_path()
    assert cls.trainable and path.is_file() and path.name == f"train_{method}.yaml"
    config_cls = {"oneclass": oneclass.OneClassTrainConfig, "siamese": siamese.SiameseTrainConfig}
    assert nettrain.load_config(config_cls[method], path, None, method).method == method
