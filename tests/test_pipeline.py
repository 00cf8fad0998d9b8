"""The catalogue pipeline: stage order, plugin-inserted stages and columns."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from blendflag.config import PipelineConfig
from blendflag.errors import PluginError
from blendflag.pipeline.stages import (
    Context,
    Stage,
    Stages,
    build_stages,
    default_stages,
    run_pipeline,
)
from blendflag.plugins import get_plugin_manager
from tests.conftest import run_cli


def test_default_stage_order_with_builtin_flag_stage():
    pm = get_plugin_manager()
    assert default_stages().names() == [
        "detect",
        "cutout",
        "match_truth",
        "measure_shear",
        "measure_shear_masked",
        "shear_statistics",
        "annotate",
    ]
    assert build_stages(pm).names() == [
        "detect",
        "cutout",
        "flag_blends",
        "match_truth",
        "measure_shear",
        "flag_metacal_blends",
        "measure_shear_masked",
        "shear_statistics",
        "annotate",
    ]


def test_blocking_flag_stage_removes_the_step(monkeypatch):
    monkeypatch.setenv("BLENDFLAG_DISABLE_PLUGINS", "flag_stage")
    assert "flag_blends" not in build_stages(get_plugin_manager()).names()


def test_stages_helpers():
    stages = default_stages()
    stages.insert_after("detect", Stage("a", lambda c: None))
    stages.insert_before("detect", Stage("b", lambda c: None))
    assert stages.names()[:3] == ["b", "detect", "a"]
    assert stages.remove_named("a").name == "a"
    with pytest.raises(PluginError, match="no pipeline stage named 'zzz'"):
        stages.insert_after("zzz", Stage("c", lambda c: None))


def test_duplicate_stage_names_rejected():
    import types

    from blendflag import hookimpl

    plugin = types.ModuleType("dup")

    @hookimpl
    def blendflag_pipeline_stages(stages):
        stages.append(Stage("cutout", lambda c: None))

    plugin.blendflag_pipeline_stages = blendflag_pipeline_stages
    pm = get_plugin_manager(extra_plugins=[("dup", plugin)])
    with pytest.raises(PluginError, match="used twice: cutout"):
        build_stages(pm)


def test_pipeline_detects_and_flags_in_memory(small_field):
    from blendflag.flagging.flaggers import make_flaggers
    from blendflag.io.images import read_image

    pm = get_plugin_manager()
    image, _ = read_image(small_field["image"])
    config = PipelineConfig()
    context = Context(config=config, pm=pm, image=image)
    context.flagger_objects = make_flaggers(pm, "sextractor", config)
    run_pipeline(context)
    assert context.results["stage_order"] == [
        "detect",
        "cutout",
        "flag_blends",
        "match_truth",
        "measure_shear",
        "flag_metacal_blends",
        "measure_shear_masked",
        "shear_statistics",
        "annotate",
    ]
    assert len(context.table) >= 14
    flags = context.annotation.columns["BLEND_SEXTRACTOR"]
    np.testing.assert_array_equal(flags, (np.asarray(context.table["FLAGS"]) & 2) != 0)
    assert context.stamps is None  # the sextractor flagger reads FLAGS, needs no stamps
    assert set(context.timings) == set(context.results["stage_order"])


def test_third_party_stage_runs_in_place_and_adds_column(third_party_plugin, detected, capsys):
    out = detected["tmp"] / "flagged.fits"
    code, _, err = run_cli(
        [
            "flag",
            detected["catalogue"],
            "--image",
            detected["image"],
            "--flaggers",
            "sextractor",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    with fits.open(out) as hdul:
        objects = hdul["LDAC_OBJECTS"]
        assert "N_NEIGHBOURS" in objects.columns.names
        assert "BLEND_SEXTRACTOR" in objects.columns.names
        # the stage ran after flag_blends and before measure_shear
        assert objects.header["NB_SAW"] == "detect,cutout,flag_blends,match_truth"
        n_nb = objects.data["N_NEIGHBOURS"]
        x, y = objects.data["X_IMAGE"], objects.data["Y_IMAGE"]
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.testing.assert_array_equal(n_nb, (d < 10).sum(axis=1) - 1)


def test_third_party_command(third_party_plugin, capsys):
    code, out, _ = run_cli(["neighbours"], capsys)
    assert code == 0
    assert "neighbour radius 10.0 px" in out


def test_stages_is_a_list():
    assert isinstance(Stages(), list)
