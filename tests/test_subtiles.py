"""One large image as sub-tiles: every object owned once, and the split run equals the whole run."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from blendflag.io.images import read_image_section
from blendflag.tiling.grid import centre_pixels, owners, subtile_grid


@pytest.mark.parametrize(
    ("shape", "core", "margin"),
    [((600, 600), 300, 42), ((517, 1003), 128, 42), ((64, 70), 64, 0), ((1000, 999), 97, 5)],
)
def test_every_object_is_owned_exactly_once(shape, core, margin):
    ny, nx = shape
    grid = subtile_grid(shape, core, margin)
    cover = np.zeros(shape, dtype=np.int32)
    for (x0, x1, y0, y1), (rx0, rx1, ry0, ry1) in grid:
        cover[y0:y1, x0:x1] += 1
        assert rx0 == max(0, x0 - margin) and rx1 == min(nx, x1 + margin)
        assert ry0 == max(0, y0 - margin) and ry1 == min(ny, y1 + margin)
    assert (cover == 1).all()  # the cores tile the image once
    rng = np.random.default_rng(4)
    n = 5000
    x = rng.uniform(0.5, nx + 0.5, n)
    y = rng.uniform(0.5, ny + 0.5, n)
    # edges, corners and half-pixel positions on core boundaries
    x[:4], y[:4] = [0.5, nx + 0.5, 0.5, nx + 0.5], [0.5, 0.5, ny + 0.5, ny + 0.5]
    x[4:8] = core + 0.5
    y[4:8] = [core + 0.5, core + 1.0, 1.0, ny]
    owner = owners(x, y, shape, [c for c, _ in grid])
    assert owner.shape == (n,) and owner.min() >= 0 and owner.max() < len(grid)
    ix, iy = centre_pixels(x, y, shape)
    counts = np.zeros(n, dtype=int)
    for k, ((x0, x1, y0, y1), (rx0, rx1, ry0, ry1)) in enumerate(grid):
        inside = (ix >= x0) & (ix < x1) & (iy >= y0) & (iy < y1)
        counts += inside
        assert (owner[inside] == k).all()
        # a stamp of side 2 * (margin - 16) + 1 around an owned object is inside the region
        # or clipped by the image edge only
        half = max(0, margin - 17)
        mine = owner == k
        assert ((ix[mine] - half >= rx0) | (rx0 == 0)).all()
        assert ((ix[mine] + half < rx1) | (rx1 == nx)).all()
        assert ((iy[mine] - half >= ry0) | (ry0 == 0)).all()
        assert ((iy[mine] + half < ry1) | (ry1 == ny)).all()
    assert (counts == 1).all()


def test_read_section_is_the_slice_and_keeps_the_wcs(tmp_path):
    from astropy.wcs import WCS

    data = np.arange(40 * 50, dtype=">f4").reshape(40, 50)
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=20.0, CRPIX2=15.0, CRVAL1=10.0,
        CRVAL2=-5.0, CD1_1=-5e-5, CD1_2=1e-6, CD2_1=2e-6, CD2_2=5e-5,
    )  # fmt: skip
    fits.PrimaryHDU(data, header).writeto(tmp_path / "img.fits")
    region = (7, 31, 3, 29)
    section, head = read_image_section(tmp_path / "img.fits", region)
    assert section.dtype == np.float32 and section.dtype.isnative
    np.testing.assert_array_equal(section, data[3:29, 7:31])
    whole, part = WCS(header), WCS(head)
    np.testing.assert_allclose(
        part.pixel_to_world_values(4.0, 6.0), whole.pixel_to_world_values(11.0, 9.0), rtol=1e-12
    )


@pytest.fixture(scope="module")
def small_image(tmp_path_factory):
    """A 300 x 300 CFIS-like image with its weight, PSF and a detected catalogue."""
    from blendflag.commands.detect import detect
    from blendflag.config import PipelineConfig
    from blendflag.io.catalog import write_ldac
    from blendflag.plugins import get_plugin_manager
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.field_io import write_field

    root = tmp_path_factory.mktemp("subtiles")
    field = simulate_field("cfis", 70, shear=(0.02, 0.0), seed=31, size=300)
    write_field(field, root / "f")
    table = detect(get_plugin_manager(), field.image, field.weight, PipelineConfig().detect)
    write_ldac(table, root / "f" / "cat.ldac")
    return root / "f"


def _whole_and_split(small_image, work):
    from blendflag.config import PipelineConfig
    from blendflag.flagging.flaggers import make_flaggers
    from blendflag.pipeline.compare import run_compare
    from blendflag.pipeline.field_input import file_input
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine
    from blendflag.tiling.split_image import SplitImage, run_split_compare

    pm = get_plugin_manager()
    config = PipelineConfig()
    engine = select_engine(get_shear_engines(pm), "metacal")
    files = [small_image / n for n in ("image.fits", "psf.fits", "cat.ldac", "weight.fits")]
    data = file_input(*files[:3], files[3], true_shear=(0.02, 0.0))
    flaggers = make_flaggers(pm, ["sextractor"], config)
    whole = run_compare(
        pm, config, data, flaggers, engine, seed=3, n_bootstrap=50, flag_original=False
    )
    image = SplitImage(*map(str, files), core=150, true_shear=(0.02, 0.0))
    split = run_split_compare(
        pm, config, ["sextractor"], engine, image, work_dir=work, seed=3, n_bootstrap=50,
        on_message=None,
    )  # fmt: skip
    return whole, split.document()


def _stored_sums(work, name):
    keys, sums = [], []
    for path in sorted(work.glob("sub*.sums.npz")):
        with np.load(path) as data:
            k = [str(n) for n in data["names"]].index(name)
            keys.append(data[f"keys{k}"])
            sums.append(data[f"sums{k}"])
    return np.concatenate(keys), np.concatenate(sums)


@pytest.mark.slow
def test_split_run_equals_the_whole_image_and_resumes(small_image, tmp_path):
    work = tmp_path / "work"
    whole, split = _whole_and_split(small_image, work)
    assert split["sub_tiles"]["n"] == 4 and split["sub_tiles"]["run"] == 4
    assert sum(split["sub_tiles"]["objects_per_sub_tile"]) == split["n_objects"]
    assert split["n_objects"] == len(whole.context.table)
    # per-selection sums: the same units (the whole image's cells, which sub-tiles
    # share), the same values once each cell's parts are added
    for name, (sums,) in whole.unit_sums.items():
        keys, stored = _stored_sums(work, name)
        cells, where = np.unique(keys, return_inverse=True)
        added = np.zeros((len(cells), stored.shape[1]))
        np.add.at(added, where, stored)
        np.testing.assert_array_equal(cells, sums.keys)
        np.testing.assert_allclose(added, sums.sums, rtol=1e-10, atol=1e-12)
    names = [e["name"] for e in whole.json["selections"]]
    assert names == [e["name"] for e in split["selections"]]
    assert {"all", "all_masked", "no_sextractor_blends"} <= set(names)
    for a, b in zip(whole.json["selections"], split["selections"], strict=True):
        for key in ("n", "n_per_image", "R11", "R11_S", "g1", "m", "m_err", "c2", "dm_vs_all"):
            if a[key] is None:
                assert b[key] is None
            else:
                np.testing.assert_allclose(b[key], a[key], rtol=1e-9, atol=1e-12, err_msg=key)
    # a killed run: one sub-tile's sums missing; only that one runs again
    lost = sorted(work.glob("sub*.sums.npz"))[2]
    lost.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in work.glob("sub*.sums.npz")}
    _, again = _whole_and_split(small_image, work)
    assert again["sub_tiles"]["run"] == 1 and again["sub_tiles"]["skipped"] == 3
    assert lost.exists()
    assert {p.name: p.stat().st_mtime_ns for p in work.glob("sub*.sums.npz") if p != lost} == (
        before
    )
    for a, b in zip(split["selections"], again["selections"], strict=True):
        assert a == b


def test_sub_tile_option_errors(small_image, capsys):
    from tests.conftest import run_cli

    base = ["compare", "--image", small_image / "image.fits", "--psf", small_image / "psf.fits"]
    code, _, err = run_cli([*base, "--sub-tile", "32", "--quiet"], capsys)
    assert code == 2 and err.startswith("error: --sub-tile must be 0")
    code, _, err = run_cli([*base, "--sub-tile", "150", "--quiet"], capsys)
    assert code == 2 and "needs --catalogue" in err
    code, _, err = run_cli(["compare", "--sub-tile", "150", "--quiet"], capsys)
    assert code == 2 and "--sub-tile goes with --image" in err


@pytest.mark.slow
def test_bench_split_tile_rates(capsys):
    from blendflag.config import PipelineConfig
    from blendflag.plugins import get_plugin_manager
    from blendflag.tiling.bench import bench_split_tile

    rows = bench_split_tile(get_plugin_manager(), PipelineConfig(), ["sextractor"], 300, workers=1)
    stages = [r["stage"] for r in rows]
    assert stages[0] == "tile: detect" and stages[-1].startswith("tile: compare, 1 workers")
    assert "tile: measure_shear (per process)" in stages
    assert all(r["objects"] > 0 and r["objects_per_s"] > 0 for r in rows)


def test_sub_tile_catalogue_rows_leave_the_whole_table_to_be_freed(tmp_path):
    """A worker reads the whole catalogue for every sub-tile: none of it may stay in memory."""
    import gc

    from blendflag.tiling.subtile_tasks import subtile_catalogue

    n = 2000
    rng = np.random.default_rng(0)
    columns = [
        fits.Column(name="NUMBER", format="J", array=np.arange(1, n + 1)),
        fits.Column(name="X_IMAGE", format="E", array=rng.uniform(1, 500, n)),
        fits.Column(name="Y_IMAGE", format="E", array=rng.uniform(1, 500, n)),
        fits.Column(name="VIGNET", format="400E", dim="(20, 20)", array=np.ones((n, 20, 20))),
    ]
    path = tmp_path / "cat.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns)]).writeto(path)
    table_bytes = n * 20 * 20 * 4

    def whole_tables_alive():
        gc.collect()
        arrays = [o for o in gc.get_objects() if isinstance(o, np.ndarray)]
        return sum(a.nbytes >= table_bytes for a in arrays)

    before = whole_tables_alive()
    for _ in range(3):
        cat = subtile_catalogue(path, np.arange(100, 160), (50, 10))
        data = cat.hdul[cat.objects_hdu].data
        assert len(data) == 60 and data["VIGNET"].shape == (60, 20, 20)
        np.testing.assert_allclose(data["NUMBER"], np.arange(101, 161))
        del cat, data
    assert whole_tables_alive() == before


@pytest.mark.slow
def test_the_three_compare_routes_write_the_same_keys(small_image, tmp_path, capsys):
    """The direct run, ``--tiles`` and a split image end in one JSON builder: same keys."""
    import json

    from blendflag.cli import main

    files = {
        "image": small_image / "image.fits",
        "psf": small_image / "psf.fits",
        "catalogue": small_image / "cat.ldac",
        "weight": small_image / "weight.fits",
    }
    common = ["compare", "--flaggers", "sextractor", "--bootstrap", "20", "--workers", "1"]
    direct = [f"--{k}={v}" for k, v in files.items()] + ["--true-shear=0.02,0", "--quiet"]
    (tmp_path / "tiles.txt").write_text(" ".join(f"{k}={v}" for k, v in files.items()) + "\n")
    routes = {
        "direct": [*direct, "--sub-tile", "0"],
        "split": [*direct, "--sub-tile", "150", "--out-dir", str(tmp_path / "work")],
        "tiles": ["--tiles", str(tmp_path / "tiles.txt"), "--out-dir", str(tmp_path / "out")],
    }
    keys = {}
    for route, options in routes.items():
        path = tmp_path / f"{route}.json"
        assert main([*common, *options, "--json", str(path)]) == 0, capsys.readouterr().err
        document = json.loads(path.read_text())
        keys[route] = sorted(document)
        assert document["provenance"]["command"].startswith("blendflag-shear compare")
    assert keys["direct"] == keys["split"] == keys["tiles"]
    assert {"provenance", "selections", "tiles", "sub_tiles", "input"} <= set(keys["direct"])
