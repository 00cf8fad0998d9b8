"""Runs that succeed say what they did to the input: warnings, nulls with reasons, progress.

Also: TensorFlow's start-up notes filtered from stderr, ``simulate-field
--overwrite`` leaving no stale file, and ``compare --true-shear`` giving m on a
user's own simulated image.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy.io import fits

from blendflag._runtime.progress import LogProgress
from blendflag._runtime.quiet_imports import is_chatter, native_stderr_filtered
from blendflag.io.paths import same_file
from blendflag.shear.paired import MIN_UNITS, UnitSums, compare_statistics
from tests.conftest import run_cli


def _strict_json(path):
    def refuse(name):
        raise AssertionError(f"{name} in the JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_nan_weights_are_masked_with_one_warning_that_counts_them(small_field, capsys):
    weight = fits.getdata(small_field["weight"]).copy()
    weight[:3, :4] = np.nan
    path = small_field["tmp"] / "nan_weight.fits"
    fits.PrimaryHDU(weight).writeto(path)
    out = small_field["tmp"] / "cat.fits"
    code, _, err = run_cli(["detect", small_field["image"], "--weight", path, "--out", out], capsys)
    assert code == 0, err
    assert err.splitlines() == [
        "warning: weight map nan_weight.fits has 12 NaN/inf/negative pixels (of 65536): "
        "masked (weight 0)"
    ]


def test_evaluate_on_one_stamp_writes_json_with_null_not_nan(tmp_path, capsys):
    out = tmp_path / "e.json"
    argv = ["evaluate", "--dataset", "cfis", "--n", "1", "--methods", "sextractor", "--json", out]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    data = _strict_json(out)
    assert None in data["methods"]["sextractor"]["confusion"][1]  # no non-blend: undefined


def _sums(n_units, sign, rng):
    sums = np.zeros((n_units, 15))
    sums[:, [0, 7, 9, 11, 13]] = 1.0  # one object per unit in every version
    sums[:, 1] = 0.02 * sign + rng.normal(0, 0.01, n_units)  # e1
    sums[:, 3], sums[:, 4] = 0.01, -0.01  # R11 = 1
    sums[:, 5], sums[:, 6] = 0.01, -0.01
    return UnitSums(np.arange(n_units), sums, n_units, sign)


@pytest.mark.parametrize("n_units", [1, MIN_UNITS - 1])
def test_too_few_units_give_null_m_with_a_reason(n_units):
    rng = np.random.default_rng(3)
    sel = {"all": [_sums(n_units, 1, rng), _sums(n_units, -1, rng)]}
    (entry,) = compare_statistics(sel, 0.01, (0.02, 0.0), rng, 20)
    assert entry["m"] is None and entry["g1"] is None and entry["c1"] is None
    assert entry["null_reason"].startswith("too few units")
    assert "shear.bootstrap_cell" in entry["null_reason"]


def test_enough_units_give_m_and_no_reason_and_bootstrap_0_no_errors():
    rng = np.random.default_rng(3)
    sel = {"all": [_sums(40, 1, rng), _sums(40, -1, rng)]}
    (entry,) = compare_statistics(sel, 0.01, (0.02, 0.0), rng, 0)
    assert entry["m"] is not None and entry["null_reason"] is None
    assert entry["m_err"] is None  # --bootstrap 0: no error bars
    (entry,) = compare_statistics(sel, 0.01, None, rng, 20)
    assert entry["m"] is None and "no true shear" in entry["null_reason"]


def test_the_table_states_why_m_is_null(capsys):
    from blendflag.commands.compare import print_table

    rng = np.random.default_rng(3)
    entries = compare_statistics({"all": [_sums(2, 1, rng)]}, 0.01, (0.02, 0.0), rng, 20)
    print_table(
        {"selections": entries, "engine": "x", "true_shear": [0.02, 0], "n_objects": 2,
         "n_measured": 2}
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "m is null for every selection: too few units: 2 measured" in out


def test_log_progress_prints_counts_rate_and_time_at_most_every_interval(capsys):
    bar = LogProgress(total=30, desc="shear", unit="obj", interval=3600)
    for _ in range(3):
        bar.update(10)
    bar.close()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1  # the interval never passed: only the stage's last line
    assert lines[0].startswith("shear: 30/30 obj (100%), ") and "obj/s" in lines[0]
    assert lines[0].endswith(" s")
    every = LogProgress(range(4), desc="tiles", unit="tile", interval=0)
    assert list(every) == [0, 1, 2, 3]
    assert len(capsys.readouterr().err.splitlines()) == 4  # no repeat of the last line


def test_progress_off_a_terminal_is_line_based(capsys):
    from blendflag._runtime.progress import progress

    assert isinstance(progress(total=3, desc="x"), LogProgress)  # capsys: not a terminal
    assert not isinstance(progress(total=3, desc="x", quiet=True), LogProgress)


def test_tensorflow_start_up_notes_are_filtered_and_real_errors_kept(capfd):
    notes = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796197934.519590   32590 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796197955.543729     464 cpu_feature_guard.cc:227] This TensorFlow binary",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild",
    ]
    real = "F0000 00:00:1.0 1 x.cc:1] Check failed: something real"
    assert all(is_chatter(n) for n in notes) and not is_chatter(real)
    with native_stderr_filtered():
        os.write(2, ("\n".join([*notes, real]) + "\n").encode())
    assert capfd.readouterr().err.splitlines() == [real]


def test_same_file_sees_through_symlinks_and_relative_paths(tmp_path, monkeypatch):
    target = tmp_path / "a.fits"
    target.write_text("x")
    os.symlink(target, tmp_path / "b.fits")
    monkeypatch.chdir(tmp_path)
    assert same_file("b.fits", target) and same_file(f"../{tmp_path.name}/a.fits", "a.fits")
    assert not same_file("a.fits", "c.fits")


def test_unknown_names_in_the_disable_list_are_warned_once(monkeypatch, capsys):
    blocked = os.environ.get("BLENDFLAG_DISABLE_PLUGINS", "")
    monkeypatch.setenv("BLENDFLAG_DISABLE_PLUGINS", f"{blocked},no_such_plugin".strip(","))
    code, _, err = run_cli(["plugins"], capsys)
    assert code == 0
    assert [line for line in err.splitlines() if "no_such_plugin" in line] == [
        "warning: BLENDFLAG_DISABLE_PLUGINS names 'no_such_plugin', which is no installed "
        "plugin ('blendflag-shear plugins' lists them)"
    ]


@pytest.fixture
def own_field(tmp_path_factory, capsys):
    """A user's simulated image (simulate-field, 40 galaxies in rotated pairs)."""
    out = tmp_path_factory.mktemp("own") / "field"
    argv = ["simulate-field", "--dataset", "cfis", "--n-galaxies", "40", "--shear", "0.04,0"]
    argv += ["--rotated-pairs", "--seed", "5"]  # the truth's units: rotated pairs
    code, _, err = run_cli([*argv, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    return out


def test_simulate_field_overwrite_replaces_the_directory_as_a_whole(own_field, capsys):
    stale = own_field / "stale.fits"
    stale.write_text("from an earlier run")
    argv = ["simulate-field", "--dataset", "cfis", "--n-galaxies", "4", "--shear", "0,0"]
    code, _, err = run_cli([*argv, "--seed", "1", "--out", own_field, "--quiet"], capsys)
    assert code == 2 and "--overwrite" in err and stale.exists()
    code, _, err = run_cli(
        [*argv, "--seed", "1", "--out", own_field, "--quiet", "--overwrite"], capsys
    )
    assert code == 0, err
    assert sorted(p.name for p in own_field.iterdir()) == [
        "config.yaml", "image.fits", "psf.fits", "truth.fits", "weight.fits"
    ]  # fmt: skip
    assert [p for p in own_field.parent.iterdir() if p.name != "field"] == []  # no temporaries


def test_compare_true_shear_gives_m_on_your_own_image(own_field, tmp_path, capsys):
    # 40 galaxies: too few 100-px cells for the bootstrap, so each detection is a unit
    config = tmp_path / "pipeline.yaml"
    config.write_text("shear:\n  bootstrap_cell: 0\n")
    common = ["compare", "--image", own_field / "image.fits", "--psf", own_field / "psf.fits"]
    common += ["--weight", own_field / "weight.fits", "--flaggers", "sextractor"]
    common += ["--workers", "1", "--bootstrap", "0", "--quiet", "--config", config]
    runs = {}
    for name, extra in {
        "true_shear": ["--true-shear", "0.04,0"],
        "truth": ["--truth", own_field / "truth.fits"],
    }.items():
        out = tmp_path / f"{name}.json"
        code, stdout, err = run_cli([*common, *extra, "--json", out], capsys)
        assert code == 0, err
        runs[name] = (_strict_json(out), stdout)
    for name in ("true_shear", "truth"):
        data, _ = runs[name]
        assert data["true_shear"] == [0.04, 0.0]
        first = data["selections"][0]
        assert first["m"] is not None and first["null_reason"] is None
        # m is measured against the given shear (40 galaxies: shape noise, no bound on m)
        assert first["m"] == pytest.approx(first["g1"] / 0.04 - 1.0)
