"""The literature check's verdicts (scripts/literature_check.py) on hand-made numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import script_module


@pytest.fixture(scope="module")
def check():
    return script_module("literature_check")


def test_tiles_are_one_count_or_one_per_configuration(check):
    assert check.parse_tiles("8", 3) == [8, 8, 8]
    assert check.parse_tiles("24,16,8", 3) == [24, 16, 8]
    for bad in ("8,8", "0", "a", "8,-1,2"):
        with pytest.raises(ValueError):
            check.parse_tiles(bad, 3)


def test_configs_parse_and_bad_ones_are_refused(check):
    assert check.parse_configs("des_y5:1, lsst_y10:2") == [("des_y5", 1.0), ("lsst_y10", 2.0)]
    for bad in ("des_y5", ":1", "des_y5:0", "des_y5:-2", "des_y5:nan"):
        with pytest.raises(ValueError):
            check.parse_configs(bad)


@pytest.mark.parametrize(
    ("m", "met"),
    [(-0.036, True), (-0.0241, True), (-0.0539, True), (-0.0239, False), (-0.055, False),
     (0.036, False)],
)  # fmt: skip
def test_per_object_within_a_factor_one_and_a_half_of_the_literature(check, m, met):
    v = check.verdict("metacal", m, 0.01, (-0.036, 0.005))
    assert v["met"] is met
    assert v["pull"] == pytest.approx((m + 0.036) / (0.01**2 + 0.005**2) ** 0.5)


@pytest.mark.parametrize(
    ("m", "err", "met"),
    [(0.0019, 0.0005, True), (0.0035, 0.0015, True), (0.0050, 0.0015, False),
     (0.0010, 0.0041, False), (-0.0119, 0.0040, True), (-0.0121, 0.0040, False)],
)  # fmt: skip
def test_metadetection_inside_the_band_or_three_sigma_with_a_small_error(check, m, err, met):
    assert check.verdict("metadetect", m, err, None)["met"] is met


def test_no_measurement_or_no_literature_gives_no_verdict(check):
    assert check.verdict("metacal", None, None, (-0.036, 0.005))["met"] is None
    assert check.verdict("metacal", -0.03, 0.01, None)["met"] is None


def test_bad_input_is_one_error_line_and_exit_two(check, tmp_path, capsys):
    docs = tmp_path / "lit"
    assert check.main(["--configs", "des_y5", "--docs", str(docs)]) == 2
    assert check.main(["--configs", "nowhere:1", "--docs", str(docs)]) == 2
    assert check.main(["--tiles", "0", "--docs", str(docs)]) == 2
    assert check.main(["--config", str(tmp_path / "none.yaml"), "--docs", str(docs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert not list(tmp_path.iterdir())


def test_a_diagnostic_config_measures_into_its_own_tiles(check):
    from blendflag.config import load_pipeline_config

    repo = Path(__file__).resolve().parents[1]
    assert check.tiles_name("metacal", None) == "tiles_metacal"
    path = repo / "configs" / "diagnostics" / "detect_no_deblend.yaml"
    assert check.tiles_name("metacal", str(path)) == "tiles_metacal_detect_no_deblend"
    for path in sorted((repo / "configs" / "diagnostics").glob("*.yaml")):
        config = load_pipeline_config(path)  # every diagnostic config is a valid one
        assert config != load_pipeline_config(None)  # that changes something


def test_the_page_carries_every_selection_and_the_verdict(check, tmp_path):
    def sel(name, m):
        fields = {"n": 100, "fraction_kept": 1.0, "m": m, "m_err": 0.01, "c1": 0.0}
        return {"name": name, **fields, "c1_err": 1e-4, "dm_vs_truth": m - 0.01,
                "dm_vs_truth_err": 0.005}  # fmt: skip

    results = {
        ("des_y5", 1.0): {
            "metacal": {"selections": [sel("all", -0.03), sel("no_true_blends", 0.01)]},
            "metadetect": {"selections": [sel("all", 0.001)]},
        }
    }
    verdicts = check.summarise(results)
    assert verdicts["des_y5_1x"]["metacal"]["met"] is True
    assert verdicts["des_y5_1x"]["metadetect"]["met"] is False  # sigma_m 0.01 > 4e-3
    page = tmp_path / "lit.md"
    check.write_markdown(results, verdicts, page, "cmd", 1.0, {"des_y5_1x": 3})
    text = page.read_text()
    assert "| metacal | all | 100 | 1.000 | -0.0300 ± 0.0100 |" in text
    assert "| metacal | no_true_blends |" in text and "-0.03600 ± 0.00500" in text
    assert "metadetect: |m| < max(0.002, 3 sigma_m) and sigma_m <= 0.004: **missed**" in text
    json.dumps(verdicts)  # plain data for the JSON


def test_the_s2n_split_recovers_a_hand_made_bias(check):
    """Objects whose mean e1 is (1 + m) R g at +g and -(1 + m) R g at -g give m per bin."""
    g, r = check.FIELD_SHEAR[0], 0.3

    def sign(s2n, m, s):
        e1 = np.full(len(s2n), s * (1 + m) * r * g)
        return (np.asarray(s2n, float), e1, np.full(len(s2n), r))

    fields = {
        f"seed{k}": {
            "plus": sign([12, 15, 30, 60], 0.0, 1),
            "minus": sign([12, 15, 30, 60], 0.0, -1),
        }
        for k in range(3)
    }
    fields["seed0"] = {"plus": sign([12, 15], 0.1, 1), "minus": sign([12, 15], 0.1, -1)}
    low = check.bin_sums(fields, 10.0, 20.0)
    high = check.bin_sums(fields, 20.0, np.inf)
    assert low.shape == (3, 2, 3) and low[:, 0, 0].tolist() == [2, 2, 2]
    assert check.m_from_sums(high.sum(axis=0)) == pytest.approx(0.0, abs=1e-12)
    assert check.m_from_sums(low.sum(axis=0)) == pytest.approx(0.1 / 3, rel=1e-9)


def test_the_s2n_split_reads_the_tiles_of_the_run_measured(check, tmp_path):
    """A pipeline config's run is split from its own tiles, not the packaged run's."""
    from astropy.io import fits

    step = 0.01
    for sign in ("plus", "minus"):
        (tmp_path / "seed5" / sign).mkdir(parents=True)
        (tmp_path / "seed5" / sign / "image.fits").write_bytes(b"")
    names = [t.name for t in check_tiles(tmp_path)]
    for tiles, s2n in (("tiles_metacal", 15.0), ("tiles_metacal_mine", 40.0)):
        (tmp_path / tiles).mkdir()
        for name in names:
            table = fits.BinTableHDU.from_columns(
                [
                    fits.Column(name="MCAL_FLAGS", format="J", array=np.zeros(1, np.int32)),
                    fits.Column(name="S2N_NOSHEAR", format="D", array=[s2n]),
                    fits.Column(name="G1_NOSHEAR", format="D", array=[0.01]),
                    fits.Column(name="G1_1P", format="D", array=[0.3 * step]),
                    fits.Column(name="G1_1M", format="D", array=[-0.3 * step]),
                ],
                name="LDAC_OBJECTS",
            )
            fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / tiles / f"{name}.fits")
    mine = check.field_catalogues(tmp_path, [5], check.tiles_name("metacal", "x/mine.yaml"))
    packaged = check.field_catalogues(tmp_path, [5])
    assert mine["seed5"]["plus"][0].tolist() == [40.0]
    assert packaged["seed5"]["plus"][0].tolist() == [15.0]
    assert mine["seed5"]["minus"][2] == pytest.approx([0.3])


def test_a_docs_stem_with_a_dot_keeps_it(check, tmp_path):
    """A density factor's dot (lsst_y10_0.28x) is part of the stem, not a suffix to replace."""
    stem = tmp_path / "lit_lsst_y10_0.28x"
    assert check.stem_path(stem, ".md").name == "lit_lsst_y10_0.28x.md"
    assert check.stem_path(stem, ".json").name == "lit_lsst_y10_0.28x.json"


def check_tiles(root):
    from blendflag.tiling.tile_list import read_tiles

    return read_tiles(str(root / "seed*" / "*" / "image.fits"))


def test_the_paired_difference_of_two_directories_on_hand_made_sums(check):
    """B's objects carry m = 0.2 more than A's in every field: B - A = 0.2, error 0."""
    paired = script_module("shear_groups_paired")
    g, r = check.FIELD_SHEAR[0], 0.3

    def field(m):
        def sign(s):
            return (np.array([15.0, 40.0]), np.full(2, s * (1 + m) * r * g), np.full(2, r))

        return {"plus": sign(1), "minus": sign(-1)}

    a = {f"seed{k}": field(0.0) for k in range(4)}
    b = {f"seed{k}": field(0.2) for k in range(4)}
    rows = paired.paired_bins(a, b, np.random.default_rng(0), 50)
    assert [r["s2n_min"] for r in rows] == [10.0, 10.0, 20.0]
    for row in rows:
        assert row["b_minus_a"] == pytest.approx(0.2, rel=1e-9)
        assert row["b_minus_a_err"] == pytest.approx(0.0, abs=1e-12)
        assert row["fields"] == 4


def test_a_field_of_another_configuration_is_not_reused(check, tmp_path, capsys):
    """A work directory whose finished field was simulated otherwise (another
    preset, or before a default changed) is refused, not silently reused."""
    field = tmp_path / "lsst_y10_1x" / "seed100" / "plus"
    field.mkdir(parents=True)
    (field / "truth.fits").write_bytes(b"")
    (field / "config.yaml").write_text("name: another\n")
    args = ["--configs", "lsst_y10:1", "--tiles", "1", "--engines", "metacal"]
    code = check.main([*args, "--out", str(tmp_path), "--docs", str(tmp_path / "page")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "another configuration" in err
    assert err.count("\n") == 1 and not (tmp_path / "page.md").exists()


def test_objects_split_by_their_true_galaxy_under_both_shears():
    split = script_module("detection_split")
    ids = np.array([3, 5, -1, 7, 3])
    masks = split.identity_split(ids, np.array([3, 9, -1, 7]), np.array([7, -1]))
    assert masks["common"].tolist() == [True, False, False, True, True]
    assert masks["one_sign"].tolist() == [False, True, False, False, False]
    assert masks["unmatched"].tolist() == [False, False, True, False, False]
    assert np.array_equal(masks["all_but_one_sign"], ~masks["one_sign"])
    # measured in the other image but cut there: common, not common_kept
    assert masks["common_kept"].tolist() == [False, False, False, True, False]
    isolated = np.zeros(10, dtype=bool)
    isolated[[3, 9]] = True  # galaxy 3 overlaps no other in either image
    masks = split.identity_split(ids, np.array([3, 9]), np.array([3]), isolated)
    assert masks["isolated"].tolist() == [True, False, False, False, True]
    assert masks["blended"].tolist() == [False, True, False, True, False]


def _split_sums(split, excess: float, seed: int = 3) -> np.ndarray:
    """Ten fields' split sums: 1000 common objects with m = 0 and 50 one-sign
    objects whose e1 responds ``excess`` times the shear (``m = excess - 1``)."""
    g, r = 0.02, 0.5
    rng = np.random.default_rng(seed)
    sums = np.zeros((10, len(split.SPLITS), 2, len(split.SUM_COLUMNS)))
    for i in range(10):
        for j, sign in enumerate((1, -1)):
            n_c, n_o = 1000, 50
            e_c = n_c * (sign * r * g + rng.normal(0, 1e-5))
            e_o = n_o * sign * r * g * excess
            values = {"common": (n_c, e_c), "one_sign": (n_o, e_o), "unmatched": (0, 0.0)}
            values["all"] = (n_c + n_o, e_c + e_o)
            values["all_but_one_sign"] = values["common_kept"] = values["common"]
            values["isolated"], values["blended"] = values["all"], (0, 0.0)
            for k, name in enumerate(split.SPLITS):
                n, e = values[name]
                sums[i, k, j] = (n, e, n * r, n, e, n, e)  # the same kept in 1p and 1m
    return sums


def test_the_detection_split_recovers_a_hand_made_detection_bias():
    """Common objects carry the true shear (m = 0); one-sign objects add a bias
    to ``all``; the field bootstrap draws every split together."""
    split = script_module("detection_split")
    sums = _split_sums(split, excess=3.0)  # the shear-dependent detections' excess
    rows = {row["split"]: row for row in split.split_table(sums, np.random.default_rng(0), 200)}
    assert abs(rows["common"]["m"]) < 3 * rows["common"]["m_err"] + 1e-3
    assert rows["one_sign"]["m"] == pytest.approx(2.0, rel=0.02)
    assert rows["all"]["m"] == pytest.approx(100 / 1050, rel=0.05)
    assert rows["unmatched"]["m"] is None


def test_two_measurements_of_the_same_fields_differ_by_their_one_sign_objects():
    """``--against``: each split minus the same split in another tile set,
    paired over fields; only the one-sign objects differ here."""
    split = script_module("detection_split")
    sums, base = _split_sums(split, excess=3.0), _split_sums(split, excess=1.0)
    table = split.against_table(sums, base, np.random.default_rng(0), 200, 0.01)
    rows = {r["split"]: r for r in table}
    assert rows["common"]["minus_against"] == pytest.approx(0.0, abs=1e-12)
    assert rows["common"]["minus_against_err"] == pytest.approx(0.0, abs=1e-12)
    assert rows["one_sign"]["minus_against"] == pytest.approx(2.0, rel=0.02)
    assert rows["all"]["minus_against"] == pytest.approx(100 / 1050, rel=0.05)
    assert rows["all"]["m_against"] == pytest.approx(0.0, abs=1e-3)
    assert rows["unmatched"]["minus_against"] is None


def test_the_detection_split_carries_the_selection_response():
    """A cut that keeps more positive-e1 objects in the 1p version than in 1m
    has R11_S > 0, which enters the response as compare's does."""
    split = script_module("detection_split")
    row = np.array([[100, 1.0, 50.0, 100, 2.0, 100, 0.0], [100, -1.0, 50.0, 100, 0.0, 100, -2.0]])
    r_s = (2.0 / 100 - 0.0 / 100) / (2 * 0.01)  # 1.0, the +g's; the -g's is the same
    g_plus, g_minus = 0.01 / (0.5 + r_s), -0.01 / (0.5 + r_s)
    expected = (g_plus - g_minus) / (2 * 0.02) - 1
    assert split.m_with_selection(row, 0.01, 0.02) == pytest.approx(expected)


def test_the_split_profiles_describe_the_kept_objects_of_both_signs():
    """Medians over both images' kept objects, the deblended fraction, and sign x e1."""
    split = script_module("detection_split")

    def image(e1, kept, s2n, flagged):
        n = len(e1)
        profile = {
            "s2n": np.asarray(s2n, float),
            "isoarea": np.full(n, 30.0),
            "deblended": np.asarray(flagged, float),
            "true_mag": np.full(n, np.nan),  # no true galaxy: no magnitude
            "close_neighbour": np.asarray(flagged, float),  # the deblended have a neighbour
            "neighbour_cos2phi": np.where(np.asarray(flagged) > 0, 1.0, np.nan),
        }
        return {"e1": np.asarray(e1, float), "kept": np.asarray(kept), "profile": profile}

    plus = image([0.2, 0.1, 0.5], [True, True, False], [10.0, 30.0, 99.0], [1, 0, 1])
    minus = image([-0.3], [True], [20.0], [0])
    masks = {name: np.ones(1, bool) for name in split.SPLITS}
    plus_masks = {name: np.ones(3, bool) for name in split.SPLITS}
    profiles = split.split_profiles([(plus, plus_masks, 1), (minus, masks, -1)])
    one = profiles["all"]
    assert one["median_s2n"] == 20.0 and one["median_isoarea_pixels"] == 30.0
    assert one["deblended_fraction"] == pytest.approx(1 / 3)
    assert one["mean_sign_e1"] == pytest.approx((0.2 + 0.1 + 0.3) / 3)
    assert one["close_neighbour_fraction"] == pytest.approx(1 / 3)
    assert one["mean_sign_cos2phi_neighbour"] == pytest.approx(1.0)  # +g, along x
    assert one["mean_sign_cos2phi_neighbour_err"] == 0.0  # one value
    assert one["mean_sign_e1_err"] == pytest.approx(np.std([0.2, 0.1, 0.3]) / np.sqrt(3))
    assert one["median_true_mag"] is None


def test_the_nearest_detection_and_its_direction():
    """A pair along x (cos 2phi = +1), one along y (-1), a lone detection (NaN)."""
    split = script_module("detection_split")
    x = np.array([100.0, 105.0, 300.0, 300.0, 600.0])
    y = np.array([100.0, 100.0, 400.0, 408.0, 50.0])
    dist, cos2 = split.nearest_detection(x, y)
    assert dist[:4].tolist() == pytest.approx([5.0, 5.0, 8.0, 8.0])
    assert cos2[:4].tolist() == pytest.approx([1.0, 1.0, -1.0, -1.0])
    assert np.isnan(dist[4]) and np.isnan(cos2[4])
    _, cos2 = split.nearest_detection(x, y, radius=6.0)  # the y pair is 8 px apart
    assert np.isnan(cos2[2:]).all() and cos2[:2].tolist() == pytest.approx([1.0, 1.0])


def test_the_detection_splits_figure_and_its_bad_input(tmp_path, capsys):
    plot = script_module("plot_detection_splits")
    rows = [{"split": s, "m": 0.01 * k, "m_err": 0.02} for k, s in enumerate(split_names())]
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"splits": rows}))
    assert plot.read_split(str(path))["common"] == (0.01, 0.02)
    out = tmp_path / "fig.png"
    assert plot.main(["--split", f"one={path}", "--split", f"two={path}", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    for bad in (["--split", "nolabel"], ["--split", f"x={tmp_path / 'none.json'}"],
                ["--split", f"x={path}", "--literature=-0.03"]):  # fmt: skip
        assert plot.main([*bad, "--out", str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "bad.png").exists()


def split_names():
    return ("all", "common", "all_but_one_sign", "one_sign")


def test_the_detection_split_refuses_bad_input_before_any_work(tmp_path, capsys):
    split = script_module("detection_split")
    assert split.main(["--work", str(tmp_path), "--fields", "2"]) == 2  # no fields there
    for seed in (100, 101):  # fields present: the --json directory is checked next
        (tmp_path / f"seed{seed}" / "minus").mkdir(parents=True)
        (tmp_path / f"seed{seed}" / "minus" / "truth.fits").write_bytes(b"")
    out = tmp_path / "missing" / "split.json"
    assert split.main(["--work", str(tmp_path), "--fields", "2", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "--json" in err[1] and not out.parent.exists()
