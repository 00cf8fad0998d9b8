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


def test_partner_batches_pair_every_stamp_with_a_partner_of_the_stated_class():
    from blendflag_plugins.siamese import partner_batches

    x = np.arange(40, dtype=np.float16).reshape(40, 1, 1, 1)
    y = np.arange(40) % 3 == 0
    batches = list(partner_batches(x, y, seed=5, batch_size=16))
    assert [len(a) for a, _, _ in batches] == [16, 16, 8]
    a = np.concatenate([b[0] for b in batches]).ravel().astype(int)
    b = np.concatenate([b[1] for b in batches]).ravel().astype(int)
    same = np.concatenate([b[2] for b in batches])
    assert sorted(a) == list(range(40)) and batches[0][0].dtype == np.float32
    np.testing.assert_array_equal(same == 1, y[a] == y[b])
    again = list(partner_batches(x, y, seed=5, batch_size=16))
    np.testing.assert_array_equal(batches[1][1], again[1][1])  # the seed fixes the epoch


def test_training_run_checkpoints_each_epoch_and_stops_at_the_budget(tmp_path, capsys):
    """The scaffolding of the one-class and Siamese trainers, with a stand-in network."""
    from blendflag.errors import BlendflagError
    from blendflag_plugins.nettrain import CHECKPOINT, TrainingRun, read_state
    from blendflag_plugins.oneclass import OneClassTrainConfig

    class Net:
        def save_weights(self, path):
            path.write_text("weights")

    config = OneClassTrainConfig(epochs=3)
    workdir = tmp_path / "w.npz.run"
    workdir.mkdir()
    state = {"config": {}, "epoch": 0, "history": []}
    run = TrainingRun(config, tmp_path / "w.npz", workdir, state, {}, Net())
    seen = []

    def train_epoch(epoch):
        seen.append(epoch)
        return [1.0, 2.0]

    assert not run.train_epochs(train_epoch, 0.0, False, "epoch {epoch}: loss {loss:.2f}")
    assert seen == [0] and run.stopped() == {"finished": False, "epochs": 1}
    assert (workdir / CHECKPOINT).exists() and read_state(workdir)["epoch"] == 1
    assert capsys.readouterr().out == "epoch 1: loss 1.50\n"
    assert run.train_epochs(train_epoch, None, True, "")
    assert seen == [0, 1, 2] and [h["loss"] for h in read_state(workdir)["history"]] == [1.5] * 3
    meta = run.metadata(0.4, {"auc": 0.9}, "a method", d0=2.0)
    assert list(meta) == [
        "input_size",
        "threshold",
        "d0",
        "training",
        "epochs_trained",
        "validation",
        "method",
    ]
    assert meta["epochs_trained"] == 3 and meta["training"]["epochs"] == 3
    with pytest.raises(BlendflagError, match="holds an unfinished run"):
        TrainingRun.start(config, tmp_path / "w.npz", None, False, True, None)
