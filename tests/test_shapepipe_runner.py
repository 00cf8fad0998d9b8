"""The ShapePipe runner (blendflag/integrations/shapepipe/blendflag_runner.py).

ShapePipe cannot be installed here: a stand-in ``shapepipe.modules.module_decorator``
records what the runner's decorator is given, a configparser subclass has
ShapePipe's ``getexpanded``/``getlist``, and a logger plays the worker's log.
The runner must write what ``blendflag-shear flag`` writes on the same files.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import types
from configparser import ConfigParser
from dataclasses import fields

import numpy as np
import pytest
from astropy.io import fits

from blendflag.errors import BlendflagError, ConfigError
from tests.conftest import run_cli

RUNNER = "blendflag.integrations.shapepipe.blendflag_runner"
NUMBER = "-000-000"
SECTION = "BLENDFLAG_RUNNER"


class ShapePipeConfig(ConfigParser):
    """ShapePipe's ``CustomParser`` API (shapepipe/pipeline/config.py)."""

    def getexpanded(self, section, option):
        return os.path.expandvars(self.get(section, option))

    def getlist(self, section, option, delimiter=","):
        return [o.strip() for o in self.getexpanded(section, option).split(delimiter)]


def shapepipe_config(**options) -> ShapePipeConfig:
    config = ShapePipeConfig()
    config.read_dict({"DEFAULT": {"VERBOSE": "True"}, SECTION: options})
    return config


def _fresh_runner():
    sys.modules.pop(RUNNER, None)
    return importlib.import_module(RUNNER)


@pytest.fixture
def recorded(monkeypatch):
    """Import the runner with a stand-in ShapePipe decorator; yield (module, calls)."""
    calls = []

    def module_runner(**kwargs):
        calls.append(kwargs)

        def decorator(func):
            func.decorated_by = "stand-in shapepipe"
            return func

        return decorator

    decorator_module = types.ModuleType("shapepipe.modules.module_decorator")
    decorator_module.module_runner = module_runner
    for name, module in (
        ("shapepipe", types.ModuleType("shapepipe")),
        ("shapepipe.modules", types.ModuleType("shapepipe.modules")),
        ("shapepipe.modules.module_decorator", decorator_module),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    yield _fresh_runner(), calls
    sys.modules.pop(RUNNER, None)


@pytest.fixture
def logger(caplog):
    caplog.set_level(logging.INFO, logger="shapepipe.worker")
    return logging.getLogger("shapepipe.worker")


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A small GalSim field with natural blends, and its FITS_LDAC catalogue from ``detect``."""
    from blendflag.cli import main

    out = tmp_path_factory.mktemp("field")
    simulate = ["simulate-field", "--dataset", "cfis", "--n-galaxies", "40", "--shear", "0.02,0"]
    assert main([*simulate, "--seed", "3", "--quiet", "--out", str(out)]) == 0
    detect = ["detect", str(out / "image.fits"), "--weight", str(out / "weight.fits")]
    assert main([*detect, "--out", str(out / "cat.fits")]) == 0
    return {
        "catalogue": out / "cat.fits",
        "image": out / "image.fits",
        "weight": out / "weight.fits",
        "tmp": out,
    }


@pytest.fixture
def stage(field, tmp_path):
    """One ShapePipe job: the stage's input files with ShapePipe's names, and run dirs."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    files = []
    for pattern, key in (
        ("sexcat", "catalogue"),
        ("CFIS_image", "image"),
        ("CFIS_weight", "weight"),
    ):
        path = inputs / f"{pattern}{NUMBER}.fits"
        shutil.copy(field[key], path)
        files.append(str(path))
    output = tmp_path / "run" / "blendflag_runner" / "output"
    output.mkdir(parents=True)
    return {"files": files, "run_dirs": {"output": str(output)}, "detected": field, "tmp": tmp_path}


def test_decorator_gets_shapepipe_arguments(recorded):
    runner, calls = recorded
    assert runner.USING_SHAPEPIPE
    assert runner.blendflag_runner.decorated_by == "stand-in shapepipe"
    (kwargs,) = calls
    from blendflag import __version__

    assert kwargs["version"] == __version__
    assert kwargs["input_module"][0] == "sextractor_runner"
    assert kwargs["file_pattern"] == ["sexcat", "CFIS_image", "CFIS_weight"]
    assert len(kwargs["file_ext"]) == len(kwargs["file_pattern"])
    assert "blendflag" in kwargs["depends"]
    assert kwargs["numbering_scheme"] == NUMBER
    assert kwargs["run_method"] == "parallel"
    assert set(kwargs) == {
        "version",
        "input_module",
        "file_pattern",
        "file_ext",
        "depends",
        "executes",
        "numbering_scheme",
        "run_method",
    }


def test_runner_signature_is_shapepipes(recorded):
    import inspect

    runner, _ = recorded
    params = list(inspect.signature(runner.blendflag_runner).parameters)
    assert params == [
        "input_file_list",
        "run_dirs",
        "file_number_string",
        "config",
        "module_config_sec",
        "w_log",
    ]


def test_imports_without_shapepipe(monkeypatch):
    monkeypatch.setitem(sys.modules, "shapepipe", None)  # import shapepipe -> ImportError
    runner = _fresh_runner()
    try:
        assert not runner.USING_SHAPEPIPE
        func = runner.blendflag_runner
        assert func.module_runner_args["numbering_scheme"] == NUMBER
        assert func.file_pattern == func.module_runner_args["file_pattern"]
    finally:
        sys.modules.pop(RUNNER, None)


def _hdus(path):
    with fits.open(path) as hdul:
        return [(h.name, h.header.copy(), None if h.data is None else h.data.copy()) for h in hdul]


def assert_same_catalogue(a, b):
    ha, hb = _hdus(a), _hdus(b)
    assert [h[0] for h in ha] == [h[0] for h in hb]
    for (name, head_a, data_a), (_, head_b, data_b) in zip(ha, hb, strict=True):
        assert list(head_a.items()) == list(head_b.items()), name  # cards, values, order
        if data_a is None:
            assert data_b is None
            continue
        assert data_a.dtype.names == data_b.dtype.names, name
        for col in data_a.dtype.names or ():
            np.testing.assert_array_equal(data_a[col], data_b[col], err_msg=f"{name}.{col}")


def test_runner_writes_what_flag_writes(recorded, stage, logger, caplog, capsys):
    runner, _ = recorded
    config = shapepipe_config(FLAGGERS="sextractor")
    stdout, stderr = runner.blendflag_runner(
        stage["files"], stage["run_dirs"], NUMBER, config, SECTION, logger
    )
    out = os.path.join(stage["run_dirs"]["output"], f"blendflag_sexcat{NUMBER}.fits")
    assert stderr is None
    assert out in stdout and "BLEND_SEXTRACTOR" in stdout
    assert sorted(os.listdir(stage["run_dirs"]["output"])) == [os.path.basename(out)]
    assert out in caplog.text

    d = stage["detected"]
    expected = stage["tmp"] / "flag_cli.fits"
    args = ["flag", d["catalogue"], "--image", d["image"], "--weight", d["weight"]]
    code, printed, err = run_cli([*args, "--flaggers", "sextractor", "--out", expected], capsys)
    assert code == 0, err
    assert_same_catalogue(out, expected)
    assert stdout.partition(" -> ")[0] == printed.partition(" -> ")[0]  # same counts
    with fits.open(out) as hdul:
        flags = hdul["LDAC_OBJECTS"].data
        np.testing.assert_array_equal(flags["BLEND_SEXTRACTOR"], (flags["FLAGS"] & 2) != 0)
        assert flags["BLEND_SEXTRACTOR"].any()


def test_the_comparison_sees_a_missing_column(recorded, stage, logger):
    runner, _ = recorded
    config = shapepipe_config(FLAGGERS="sextractor")
    runner.blendflag_runner(stage["files"], stage["run_dirs"], NUMBER, config, SECTION, logger)
    out = os.path.join(stage["run_dirs"]["output"], f"blendflag_sexcat{NUMBER}.fits")
    with pytest.raises(AssertionError):
        assert_same_catalogue(out, stage["files"][0])  # the input: no BLEND_ column


def test_roles_and_prefix_from_the_config(recorded, stage, logger):
    runner, _ = recorded
    catalogue, image, _ = stage["files"]
    config = shapepipe_config(
        FLAGGERS="sextractor",
        INPUT_ROLES="image, ignore, catalogue",
        OUTPUT_PREFIX="flagged",
    )
    runner.blendflag_runner(
        [image, "unused.fits", catalogue], stage["run_dirs"], "-001", config, SECTION, logger
    )
    assert os.listdir(stage["run_dirs"]["output"]) == ["flagged-001.fits"]


def test_options_are_read_with_shapepipes_api(recorded, monkeypatch):
    runner, _ = recorded
    monkeypatch.setenv("BF_CONF", "/some/where")
    config = shapepipe_config(
        FLAGGERS="sextractor, vgg16",
        CONFIG_PATH="$BF_CONF/pipeline.yaml",
        THRESHOLD="0.7",
        WEIGHTS="none",
        VIEWS="4",
    )
    options = runner.read_options(config, SECTION)
    assert options.flaggers == ["sextractor", "vgg16"]
    assert options.config_path == "/some/where/pipeline.yaml"
    assert options.threshold == 0.7 and options.views == 4
    assert options.weights is None and options.input_roles is None
    assert options.output_prefix == "blendflag_sexcat"
    assert runner.read_options(shapepipe_config(), SECTION) == runner.RunnerOptions()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"THRESHOLD": "high"}, "THRESHOLD = 'high' is not a number"),
        ({"VIEWS": "2.5"}, "VIEWS = '2.5' is not an integer"),
        ({"INPUT_ROLES": "catalogue, picture, weight"}, "unknown role(s) 'picture'"),
        ({"INPUT_ROLES": "catalogue, image"}, "2 roles for 3 input files"),
        ({"INPUT_ROLES": "catalogue, weight, ignore"}, "must name the image file"),
        ({"FLAGGERS": "sextractor, nosuch"}, "unknown flagger 'nosuch'"),
        ({"FLAGGERS": "sextractor", "CONFIG_PATH": "/no/such.yaml"}, "such.yaml"),
    ],
)
def test_bad_config_is_logged_and_raised(recorded, stage, logger, caplog, options, message):
    runner, _ = recorded
    config = shapepipe_config(**options)
    with pytest.raises(BlendflagError, match="blendflag_runner") as raised:
        runner.blendflag_runner(stage["files"], stage["run_dirs"], NUMBER, config, SECTION, logger)
    assert isinstance(raised.value, ValueError)  # what ShapePipe's runners raise
    assert message in str(raised.value)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and message in errors[0].getMessage()
    assert errors[0].getMessage().startswith(f"blendflag_runner [{SECTION}]: ")
    assert errors[0].getMessage() == str(raised.value)
    assert os.listdir(stage["run_dirs"]["output"]) == []  # nothing half-written


def test_config_error_type(recorded, stage, logger):
    runner, _ = recorded
    with pytest.raises(ConfigError):
        runner.blendflag_runner(
            stage["files"][:1], stage["run_dirs"], NUMBER, shapepipe_config(), SECTION, logger
        )


def test_unreadable_catalogue_is_logged(recorded, stage, logger, caplog, tmp_path):
    runner, _ = recorded
    bad = tmp_path / f"sexcat{NUMBER}.txt"
    bad.write_text("not a catalogue\n")
    files = [str(bad), *stage["files"][1:]]
    with pytest.raises(BlendflagError):
        runner.blendflag_runner(
            files,
            stage["run_dirs"],
            NUMBER,
            shapepipe_config(FLAGGERS="sextractor"),
            SECTION,
            logger,
        )
    assert "blendflag_runner" in caplog.text and bad.name in caplog.text
    assert os.listdir(stage["run_dirs"]["output"]) == []


@pytest.mark.slow
def test_runner_with_vgg16_writes_what_flag_writes(recorded, stage, logger, capsys):
    pytest.importorskip("keras")
    runner, _ = recorded
    config = shapepipe_config(FLAGGERS="sextractor, vgg16")
    runner.blendflag_runner(stage["files"], stage["run_dirs"], NUMBER, config, SECTION, logger)
    out = os.path.join(stage["run_dirs"]["output"], f"blendflag_sexcat{NUMBER}.fits")
    d = stage["detected"]
    expected = stage["tmp"] / "flag_cli.fits"
    args = ["flag", d["catalogue"], "--image", d["image"], "--weight", d["weight"]]
    code, _, err = run_cli([*args, "--flaggers", "sextractor,vgg16", "--out", expected], capsys)
    assert code == 0, err
    assert_same_catalogue(out, expected)
    with fits.open(out) as hdul:
        assert "P_BLEND_VGG16" in hdul["LDAC_OBJECTS"].columns.names


def _ini_blocks(path) -> list[str]:
    import re

    return re.findall(r"```ini\n(.*?)\n```", path.read_text(), re.S)


def test_readme_section_lists_every_option_at_its_default(recorded):
    from pathlib import Path

    from blendflag.config import PipelineConfig

    runner, calls = recorded
    root = Path(__file__).resolve().parents[1]
    (block,) = [b for b in _ini_blocks(root / "README.md") if "[BLENDFLAG_RUNNER]" in b]
    config = ShapePipeConfig()
    config.read_string(block)
    options = runner.read_options(config, SECTION)
    assert options == runner.RunnerOptions(
        flaggers=list(PipelineConfig().flag.flaggers),
        views=1,
        input_roles=list(runner.DEFAULT_ROLES[3]),
    )
    (kwargs,) = calls
    assert config.getlist(SECTION, "FILE_PATTERN") == kwargs["file_pattern"]
    assert config.get(SECTION, "NUMBERING_SCHEME") == kwargs["numbering_scheme"]
    documented = {k.upper() for k in config[SECTION]} - {"INPUT_DIR", "FILE_PATTERN"}
    documented -= {"NUMBERING_SCHEME"}
    table = (root / "blendflag/integrations/shapepipe/README.md").read_text()
    assert all(f"| `{name}` |" in table for name in documented)
    assert len(documented) == len(fields(runner.RunnerOptions))


def test_integration_readme_example_is_read(recorded):
    from pathlib import Path

    runner, _ = recorded
    path = Path(__file__).resolve().parents[1] / "blendflag/integrations/shapepipe/README.md"
    (block,) = _ini_blocks(path)
    config = ShapePipeConfig()
    config.read_string(block)
    options = runner.read_options(config, SECTION)
    assert options.flaggers == ["sextractor", "vgg16"] and options.threshold is None
