"""SExtractor baseline: the stamp rule on hand-made stamps, both backends, evaluate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from blendflag.config import DetectConfig
from blendflag_plugins.sextractor_run import find_binary, run_sextractor
from blendflag_plugins.stamp_detect import classify_stamps
from tests.conftest import gaussian_image, run_cli

HAS_BINARY = find_binary() is not None
needs_binary = pytest.mark.skipif(
    not HAS_BINARY, reason="SExtractor binary (Debian package source-extractor) not on PATH"
)


def hand_made_stamps(rng):
    """[single, overlapping pair 7 px apart, pair 20 px apart], 51x51, noise 5 ADU."""
    c = 25.0
    layouts = [
        [(c, c)],
        [(c, c), (c + 7.0, c + 1.0)],
        [(c, c), (c + 18.0, c + 8.0)],
    ]
    return np.stack(
        [
            gaussian_image((51, 51), pos, flux=5000.0, sigma_px=1.8, noise=5.0, rng=rng)
            for pos in layouts
        ]
    )


@pytest.mark.parametrize("backend", ["sep", pytest.param("sextractor", marks=needs_binary)])
def test_stamp_rule_on_hand_made_stamps(backend):
    stamps = hand_made_stamps(np.random.default_rng(5))
    result = classify_stamps(stamps, backend=backend)
    assert result.flag.tolist() == [False, True, False]
    assert result.probability is None


def test_pair_too_close_to_deblend_is_a_miss():
    # 1 px apart: one merged detection, no deblend flag -> classified not blend (the rule)
    rng = np.random.default_rng(2)
    stamp = gaussian_image(
        (51, 51), [(25, 25), (26, 25)], flux=5000.0, sigma_px=1.8, noise=5.0, rng=rng
    )
    assert not classify_stamps(stamp[None]).flag[0]


def test_nothing_detected_is_not_a_blend():
    stamps = np.random.default_rng(0).normal(0, 1, (2, 51, 51)).astype(np.float32)
    assert not classify_stamps(stamps).flag.any()


@needs_binary
def test_binary_leaves_no_files(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    image = gaussian_image((128, 128), [(40, 40), (44, 41), (90, 90)], noise=5.0)
    table = run_sextractor(image, DetectConfig())
    assert len(table) >= 2
    assert list(tmp_path.iterdir()) == []


def test_missing_binary_is_a_clear_error(monkeypatch):
    from blendflag.errors import BlendflagError

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BlendflagError, match="SExtractor binary not found"):
        run_sextractor(np.zeros((10, 10)), DetectConfig())


@needs_binary
def test_binary_and_sep_agree_on_a_field(small_field, capsys):
    """sep's OBJ_MERGED and SExtractor's FLAGS & 2 on the same image."""
    from blendflag.io.catalog import read_catalogue

    tmp = small_field["tmp"]
    for backend in ("sep", "sextractor"):
        code, _, err = run_cli(
            [
                "detect",
                small_field["image"],
                "--out",
                tmp / f"{backend}.fits",
                "--backend",
                backend,
            ],
            capsys,
        )
        assert code == 0, err
    a, b = read_catalogue(tmp / "sep.fits"), read_catalogue(tmp / "sextractor.fits")
    xa, ya = a.positions()
    xb, yb = b.positions()
    d = np.hypot(xa[:, None] - xb[None], ya[:, None] - yb[None])
    j = d.argmin(axis=1)
    matched = d[np.arange(len(xa)), j] < 1.0
    assert matched.mean() > 0.9
    fa = (a.column("FLAGS")[matched] & 2) != 0
    fb = (b.column("FLAGS")[j[matched]] & 2) != 0
    assert (fa == fb).mean() >= 0.95
    assert fa.sum() >= 2  # the close pairs are deblended by both


def test_evaluate_command_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "e.json", tmp_path / "e.png"
    code, _, err = run_cli(
        [
            "evaluate",
            "--dataset",
            "great3",
            "--n",
            "200",
            "--seed",
            "3",
            "--methods",
            "sextractor",
            "--json",
            out,
            "--plot",
            png,
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["n"] == 200
    m = data["methods"]["sextractor"]
    cm = np.array(m["confusion"])
    np.testing.assert_allclose(cm.sum(axis=0), [1.0, 1.0])  # normalised by actual class
    assert 0.5 < m["accuracy"] <= 1.0
    assert m["blend_recall"] == cm[0, 0] and m["nonblend_recall"] == cm[1, 1]
    assert [b["max"] for b in m["by_separation"]] == [5.0, 10.0, 15.0, None]
    assert sum(b["n"] for b in m["by_noise"]) == 200
    assert m["stamps_per_s"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--methods", "nope"], "unknown flagger 'nope'"),
        (["--n", "0"], "--n must be a positive"),
        (["--noise", "loud"], "--noise must be a number or 'grid'"),
    ],
)
def test_evaluate_bad_arguments(args, match, tmp_path, capsys):
    code, _, err = run_cli(
        ["evaluate", "--dataset", "great3", "--json", tmp_path / "x.json", *args], capsys
    )
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
