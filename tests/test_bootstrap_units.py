"""Selections as real data makes them, and the bootstrap over cells of the sky."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table
from hypothesis import given, settings
from hypothesis import strategies as st

from blendflag.shear.paired import UnitSums, compare_statistics
from blendflag.shear.results import METACAL_VERSIONS
from blendflag.shear.units import cell_ids, unsheared

SIDE = 300  # one half of a rotated-pair image (pixels)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.6, SIDE + 0.4), st.floats(0.6, SIDE + 0.4)),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from([7, 50, 100, 301]),
)
def test_a_rotated_twin_shares_its_galaxy_cell(positions, cell):
    """The simulation's twin (right half, turned 90 degrees) falls in its galaxy's unit."""
    x, y = np.array(positions).T
    centre = (SIDE + 1) / 2.0
    # blendflag.simulate.field_layout._rotated_twins
    twin_x, twin_y = SIDE + centre - (y - centre), centre + (x - centre)
    shape = (SIDE, 2 * SIDE)
    left = cell_ids(x, y, shape, cell, rotated_halves=True)
    right = cell_ids(twin_x, twin_y, shape, cell, rotated_halves=True)
    np.testing.assert_array_equal(left, right)
    assert (left >= 0).all() and left.max() < (-(-SIDE // cell)) ** 2


def test_cells_follow_the_whole_image_frame():
    """A sub-tile's positions plus its corner give the whole image's cells."""
    shape = (400, 500)
    x, y = np.array([1.0, 99.9, 100.6, 499.0]), np.array([1.0, 250.0, 399.0, 100.6])
    whole = cell_ids(x, y, shape, 100)
    np.testing.assert_array_equal(whole, [0, 10, 16, 9])
    part = cell_ids(x - 40, y - 30, shape, 100, origin=(40.0, 30.0))
    np.testing.assert_array_equal(part, whole)


def test_a_scene_sheared_about_the_centre_is_taken_back():
    """An outside simulation's ±g positions (sheared about the centre) land in one cell."""
    import galsim

    rng = np.random.default_rng(4)
    shape = (251, 251)
    centre = (251 + 1) / 2.0
    x, y = rng.uniform(1, 251, (2, 500))
    cells = []
    for g1 in (0.02, -0.02):
        matrix = galsim.Shear(g1=g1, g2=0.0).getMatrix()
        sx, sy = matrix @ np.vstack([x - centre, y - centre]) + centre
        assert np.abs(sx - x).max() > 2.0  # moved by up to 2.5 px near the edge
        bx, by = unsheared(sx, sy, shape, (g1, 0.0))
        np.testing.assert_allclose(bx, x, atol=1e-9)
        np.testing.assert_allclose(by, y, atol=1e-9)
        cells.append(cell_ids(bx, by, shape, 100))
    np.testing.assert_array_equal(cells[0], cells[1])


def test_a_uniformly_sheared_survey_field_puts_each_galaxy_in_one_cell():
    """blendflag's survey fields shear each half about its own centre (truth
    ``SHRSCENE``): taken back, a galaxy of the +g field and of the -g field
    falls in the same cell of both, as does its rotated twin."""
    from blendflag.shear.units import unsheared_scenes
    from blendflag.simulate.field_layout import lay_out_galaxies
    from blendflag.simulate.presets import load_dataset

    preset, side, cells = load_dataset("cfis_survey"), 600, []
    for g1 in (0.02, -0.02):
        rng = np.random.default_rng(7)
        layout = lay_out_galaxies(rng, preset, 500, side, 26, True, (g1, 0.0))
        assert layout.uniform_shear
        shape = (side, 2 * side)
        x, y = unsheared_scenes(layout.xs, layout.ys, shape, (g1, 0.0), 2)
        cells.append(cell_ids(x, y, shape, 100, rotated_halves=True))
        moved = cell_ids(layout.xs, layout.ys, shape, 100, rotated_halves=True)
    np.testing.assert_array_equal(cells[0], cells[1])
    assert np.any(moved != cells[1])  # as sheared, some cross a cell border
    half = len(cells[0]) // 2
    np.testing.assert_array_equal(cells[0][:half], cells[0][half:])


def _field_context(shape, g1, sign, cell=100):
    """What :func:`blendflag.shear.units.sky_cells` reads of a ±g survey field's context."""
    from types import SimpleNamespace

    truth = Table({"ROTATED": np.zeros(4, dtype=bool)})
    truth["ROTATED"][2:] = True
    truth.meta["SHRSCENE"] = True
    shear = SimpleNamespace(bootstrap_cell=cell)
    return SimpleNamespace(
        config=SimpleNamespace(shear=shear),
        image=np.zeros(shape),
        image_header=None,
        truth=truth,
        results={},
        true_shear=(g1, 0.0),
        shear_sign=sign,
    )


def test_an_image_engines_rows_take_the_sky_cells_of_both_signs():
    """Metadetection's version catalogues: a galaxy and its rotated twin, found on
    the +g and the -g field (and a version's position moved by the metacal
    shear), share one unit, which the engine's own fixed cells do not give."""
    from blendflag.shear.catalogues import VersionCatalogues
    from blendflag.shear.selections import selection_units
    from blendflag.simulate.field_layout import lay_out_galaxies
    from blendflag.simulate.presets import load_dataset

    preset, side, units = load_dataset("cfis_survey"), 600, []
    shape = (side, 2 * side)
    for sign in (1, -1):
        layout = lay_out_galaxies(
            np.random.default_rng(7), preset, 500, side, 26, True, (sign * 0.02, 0.0)
        )
        tables = {}
        for version in METACAL_VERSIONS:
            shift = 0.3 if version == "1p" else 0.0  # X_IMAGE of a sheared version
            tables[version] = Table(
                {
                    "X_IMAGE": layout.xs + shift,
                    "Y_IMAGE": layout.ys,
                    "X_UNSHEARED": layout.xs,
                    "Y_UNSHEARED": layout.ys,
                }
            )
        engine_cells = {
            v: cell_ids(t["X_IMAGE"], t["Y_IMAGE"], shape, 200) for v, t in tables.items()
        }
        result = VersionCatalogues(tables=tables, units=engine_cells, sky_cells=True)
        context = _field_context(shape, 0.02, sign)
        units.append((selection_units(context, result), engine_cells))
        # an engine whose units are not mere cells of the image keeps its own
        own = VersionCatalogues(tables=tables, units=engine_cells)
        assert selection_units(context, own) is engine_cells
        context.config.shear.bootstrap_cell = 0  # the engine's own cells
        assert selection_units(context, result) is engine_cells
    (plus, plus_engine), (minus, minus_engine) = units
    for version in METACAL_VERSIONS:
        np.testing.assert_array_equal(plus[version], minus[version])
        np.testing.assert_array_equal(plus[version], plus["noshear"])
    half = len(plus["noshear"]) // 2
    np.testing.assert_array_equal(plus["noshear"][:half], plus["noshear"][half:])
    assert np.any(plus_engine["noshear"] != minus_engine["noshear"])
    assert np.any(plus_engine["noshear"][:half] != plus_engine["noshear"][half:])


def _version_sums(n, e1, response=0.5, step=0.01):
    """``versions``-layout sums of one cell: n objects of mean e1 (R from a fixed response)."""
    row = []
    for version in METACAL_VERSIONS:
        shift = {"1p": response * step, "1m": -response * step}.get(version, 0.0)
        row += [n, n * (e1 + shift), 0.0]
    return row


def test_the_cell_bootstrap_pairs_plus_and_minus_cells_by_position():
    """+g and -g cells of one position are drawn together, so their noise cancels in m.

    Each cell's mean e1 is R g plus noise on the +g image and -R g plus the
    same noise on the -g image (the galaxies and pixels of a ±g pair): keyed
    by position, every draw cancels the noise and m has no scatter; keyed
    apart (the -g cells moved), the draws see the noise.
    """
    rng = np.random.default_rng(5)
    n_cells, g, response = 40, 0.02, 0.5
    x = rng.uniform(1, 1000, n_cells)
    y = np.repeat(np.arange(n_cells // 4) * 100 + 50.0, 4)
    x = np.tile([50.0, 150.0, 250.0, 350.0], n_cells // 4)
    noise = rng.normal(0, 0.05, n_cells)
    plus = np.array([_version_sums(30, response * g + e) for e in noise])
    minus = np.array([_version_sums(30, -response * g + e) for e in noise])
    shape = (1000, 400)
    keys_plus = cell_ids(x, y, shape, 100)
    keys_minus = cell_ids(x + rng.uniform(-20, 20, n_cells), y, shape, 100)  # moved in the cell
    assert np.array_equal(keys_plus, keys_minus) and len(set(keys_plus)) == n_cells

    def m_err(keys_m):
        sums = {
            "all": [
                UnitSums(keys_plus, plus, 30 * n_cells, 1, "versions"),
                UnitSums(keys_m, minus, 30 * n_cells, -1, "versions"),
            ]
        }
        (entry,) = compare_statistics(sums, 0.01, (g, 0.0), np.random.default_rng(0), 100)
        return entry

    paired = m_err(keys_minus)
    assert abs(paired["m"]) < 1e-12 and paired["m_err"] < 1e-12
    apart = m_err(keys_minus + n_cells)  # the -g cells as units of their own
    assert abs(apart["m"]) < 1e-12 and apart["m_err"] > 0.05


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A small ±g comparison on the CFIS survey sky (stars, faint galaxies, cuts)."""
    from blendflag.cli import main

    tmp = tmp_path_factory.mktemp("units")
    paths = {"json": tmp / "c.json", "cat": tmp / "c.fits"}
    args = ["compare", "--n-galaxies", "600", "--seed", "2", "--flaggers", "sextractor"]
    args += ["--workers", "1", "--bootstrap", "30", "--quiet"]
    code = main([*args, "--json", str(paths["json"]), "--catalogue-out", str(paths["cat"])])
    assert code == 0
    return paths


def _true_stars(table):
    """Rows of the +g catalogue that match a true star of the tiny run's field."""
    from blendflag.pipeline.field_input import simulated_input
    from blendflag.truth import match_truth, true_stars

    truth = simulated_input(n_galaxies=600, seed=2, shear=(0.02, 0.0)).truth
    return true_stars(match_truth(table, truth), truth)


def test_all_without_pair_completion_is_a_hand_count(tiny_run):
    """``all`` counts the +g catalogue's rows by flags, cuts and stars alone; ``all_paired``
    keeps those of them whose true rotated partner is kept too."""
    table = Table.read(tiny_run["cat"], hdu="LDAC_OBJECTS")
    document = json.loads(tiny_run["json"].read_text())
    entries = {e["name"]: e for e in document["selections"]}
    passed = (
        (np.asarray(table["MCAL_FLAGS"]) == 0)
        & (np.asarray(table["S2N_NOSHEAR"]) >= 10.0)
        & (np.asarray(table["T_NOSHEAR"]) / np.asarray(table["T_PSF"]) >= 1.2)
    )
    passed &= ~_true_stars(table)
    assert 0 < passed.sum() < len(table)  # the cuts remove some
    assert entries["all"]["n_per_image"][0] == int(passed.sum())
    pair = np.asarray(table["PAIR_ID"])
    ids, counts = np.unique(pair[passed], return_counts=True)
    whole = np.isin(pair, ids[counts == 2]) & passed
    assert entries["all_paired"]["n_per_image"][0] == int(whole.sum()) < int(passed.sum())
    assert document["n_in_complete_pairs"] == sum(entries["all_paired"]["n_per_image"])
    diff = entries["all_paired"]["dm_vs_all"]
    assert diff is not None and entries["all_paired"]["dm_vs_all_err"] > 0


def test_the_json_says_what_a_unit_is(tiny_run):
    document = json.loads(tiny_run["json"].read_text())
    boot = document["bootstrap"]
    assert boot["draws"] == 30 and boot["seed"] == 3
    assert boot["unit"].startswith("the detections in one 100x100-pixel cell")
    assert "rotated twin cell" in boot["unit"] and "+g and -g" in boot["unit"]
    table = Table.read(tiny_run["cat"], hdu="LDAC_OBJECTS")
    units = {e["name"]: e["n_units"] for e in document["selections"]}
    # the cells of the +g image's kept rows, and at most the grid's (the -g image adds some)
    kept = (np.asarray(table["MCAL_FLAGS"]) == 0) & (np.asarray(table["S2N_NOSHEAR"]) >= 10.0)
    kept &= np.asarray(table["T_NOSHEAR"]) / np.asarray(table["T_PSF"]) >= 1.2
    cells = np.unique(np.asarray(table["SHEAR_CELL"])[kept])
    assert len(cells) >= 10 and len(cells) <= units["all"] <= len(np.unique(table["SHEAR_CELL"]))


def test_the_units_check_finds_errors_that_cells_miss():
    """scripts/bootstrap_units_check.py: the same sums bootstrapped by cells and by
    whole fields give one m; a noise shared by the cells of an image (not
    cancelled between the signs) is seen by the fields' bootstrap only."""
    from types import SimpleNamespace

    from tests.conftest import script_module

    check = script_module("bootstrap_units_check")
    rng = np.random.default_rng(5)
    files, fields = [], []
    for field in range(16):
        for sign in (1, -1):
            shared = rng.normal(0.0, 0.02)  # one offset for every cell of the image
            cells = [
                _version_sums(50, sign * 0.5 * 0.02 + shared + rng.normal(0, 0.002))
                for _ in range(20)
            ]
            keys = (field << 32) + np.arange(20)
            sums = UnitSums(keys, np.array(cells), 1000, sign, "versions")
            files.append(SimpleNamespace(selections={"all": sums}, sign=sign))
            fields.append(field)
    whole = check.whole_fields(files, fields)
    assert [u.keys.tolist() for u in whole["all"][:2]] == [[0], [0]]
    cells = compare_statistics(
        check.as_stored(files), 0.01, (0.02, 0.0), np.random.default_rng(1), 300
    )
    by_field = compare_statistics(whole, 0.01, (0.02, 0.0), np.random.default_rng(1), 300)
    assert cells[0]["m"] == pytest.approx(by_field[0]["m"], abs=1e-12)
    assert by_field[0]["m_err"] > 2.0 * cells[0]["m_err"]


def test_the_units_check_refuses_bad_input_in_one_line(tmp_path, capsys):
    from tests.conftest import script_module

    check = script_module("bootstrap_units_check")
    assert check.main(["--tiles-dir", str(tmp_path)]) == 2  # no sums files
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    out = tmp_path / "missing" / "u.json"
    assert check.main(["--tiles-dir", str(tmp_path), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --json") and not out.parent.exists()
