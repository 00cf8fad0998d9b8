"""The plugin manager: entry points, blocking, misspelt hooks, origins."""

from __future__ import annotations

import json
import sys
import types
import typing

import pytest

from blendflag import hookimpl, hookspecs
from blendflag.errors import BlendflagError, PluginError
from blendflag.plugins import (
    describe_plugins,
    get_flaggers,
    get_plugin_manager,
    registered_classes,
    resolve_names,
)
from tests.conftest import run_cli

BUILTINS = {
    "commands",
    "sep_detect",
    "sextractor",
    "sextractor_binary",
    "flag_stage",
    "vgg16",
    "oneclass",
    "siamese",
    "metacal_galsim",
    "ngmix_engine",
}


def test_builtins_come_from_entry_points():
    pm = get_plugin_manager()
    infos = {i.name: i for i in describe_plugins(pm)}
    assert BUILTINS <= set(infos)
    for name in BUILTINS:
        assert infos[name].origin == "built-in"
        assert infos[name].distribution == "blendflag"
    assert "blendflag_detect" in infos["sep_detect"].hooks
    assert "blendflag_register_flaggers" in infos["sextractor"].hooks


def test_fresh_manager_each_call():
    pm1, pm2 = get_plugin_manager(), get_plugin_manager()
    assert pm1 is not pm2
    pm1.unregister(name="sextractor")
    assert "sextractor" in get_flaggers(pm2)
    assert "sextractor" not in get_flaggers(pm1)


def test_disable_env_blocks_named_plugins(monkeypatch):
    monkeypatch.setenv("BLENDFLAG_DISABLE_PLUGINS", "sextractor, vgg16")
    pm = get_plugin_manager()
    names = {i.name for i in describe_plugins(pm)}
    assert "sextractor" not in names and "vgg16" not in names
    assert "sep_detect" in names
    assert "sextractor" not in get_flaggers(pm) and "vgg16" not in get_flaggers(pm)


def test_misspelt_hook_fails_loudly():
    plugin = types.ModuleType("typo_plugin")

    @hookimpl
    def blendflag_detekt(image, weight, config):  # misspelt on purpose
        return None

    plugin.blendflag_detekt = blendflag_detekt
    with pytest.raises(PluginError, match="blendflag_detekt"):
        get_plugin_manager(extra_plugins=[("typo", plugin)], load_entry_points=False)


def test_misspelt_undecorated_hook_also_fails():
    plugin = types.ModuleType("typo_plugin2")

    def blendflag_register_flagers():  # undecorated and misspelt
        return []

    plugin.blendflag_register_flagers = blendflag_register_flagers
    with pytest.raises(PluginError, match="blendflag_register_flagers"):
        get_plugin_manager(extra_plugins=[("typo2", plugin)], load_entry_points=False)


def test_duplicate_flagger_names_rejected():
    a = type("A", (), {"name": "x"})
    b = type("B", (), {"name": "x"})
    with pytest.raises(PluginError, match="two plugins"):
        registered_classes([[a], [b]], "flagger")


def test_unknown_name_lists_registered():
    with pytest.raises(PluginError, match=r"unknown flagger 'nope' \(registered: a, b\)"):
        resolve_names("a,nope", {"a": object, "b": object}, "flagger")


def test_plugins_command_json(capsys):
    code, out, err = run_cli(["plugins", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert BUILTINS <= set(by_name)
    assert by_name["sep_detect"]["origin"] == "built-in"
    assert by_name["sep_detect"]["hooks"] == ["blendflag_detect", "blendflag_register_detectors"]
    assert by_name["commands"]["hooks"] == ["blendflag_register_commands"]
    assert "sextractor" in data["flaggers"] and "vgg16" in data["flaggers"]


def test_plugins_command_table(capsys):
    code, out, _ = run_cli(["plugins"], capsys)
    assert code == 0
    assert "sep_detect" in out and "built-in" in out and "flaggers:" in out


def test_third_party_origin_is_entry_point(third_party_plugin):
    pm = get_plugin_manager()
    info = {i.name: i for i in describe_plugins(pm)}["neighbours"]
    assert info.origin == "entry point"
    assert info.distribution == "blendflag-neighbours"
    assert set(info.hooks) == {
        "blendflag_pipeline_stages",
        "blendflag_annotate_catalogue",
        "blendflag_register_commands",
    }


def test_hookspecs_module_holds_only_markers_and_specs():
    public = {n for n in dir(hookspecs) if not n.startswith("_")}
    specs = {n for n in public if n.startswith("blendflag_")}
    assert public - specs == {"hookspec", "hookimpl", "pluggy"}
    assert len(specs) == 7
    assert "blendflag_detect" in sys.modules["blendflag.hookspecs"].__dict__


def test_blendflag_detect_first_result_wins(small_field):
    """A third-party detector answering for its own backend wins; others fall back to sep."""
    import numpy as np
    from astropy.table import Table

    from blendflag.config import DetectConfig
    from blendflag.io.images import read_image

    plugin = types.ModuleType("fake_detector")
    calls = []

    @hookimpl
    def blendflag_detect(image, weight, config):
        calls.append(config.backend)
        if config.backend != "fake":
            return None
        return Table({"NUMBER": [1], "X_IMAGE": [1.0], "Y_IMAGE": [1.0], "FLAGS": [0]})

    plugin.blendflag_detect = blendflag_detect
    pm = get_plugin_manager(extra_plugins=[("fake", plugin)])
    image, _ = read_image(small_field["image"])
    fake = pm.hook.blendflag_detect(image=image, weight=None, config=DetectConfig(backend="fake"))
    assert len(fake) == 1
    real = pm.hook.blendflag_detect(image=image, weight=None, config=DetectConfig())
    assert len(real) > 10 and np.all(real["X_IMAGE"] >= 1)
    assert calls == ["fake", "sep"]


def test_register_flaggers_hook_adds_a_flagger(detected, capsys):
    """A flagger registered by a plugin runs in `flag` like a built-in one."""
    import numpy as np

    from blendflag.cli import build_parser
    from blendflag.flagging.flaggers import Flagger, FlagResult

    class Brightest(Flagger):
        name = "brightest"

        def flag_stamps(self, stamps):
            peak = stamps.reshape(len(stamps), -1).max(axis=1)
            return FlagResult(flag=peak > np.median(peak), probability=peak / peak.max())

    plugin = types.ModuleType("brightest")

    @hookimpl
    def blendflag_register_flaggers():
        return [Brightest]

    plugin.blendflag_register_flaggers = blendflag_register_flaggers
    pm = get_plugin_manager(extra_plugins=[("brightest", plugin)])
    assert "brightest" in get_flaggers(pm)
    out = detected["tmp"] / "b.fits"
    args = build_parser(pm).parse_args(
        [
            "flag",
            str(detected["catalogue"]),
            "--image",
            str(detected["image"]),
            "--flaggers",
            "brightest",
            "--out",
            str(out),
        ]
    )
    assert args.func(args, pm) == 0
    from blendflag.io.catalog import read_catalogue

    cat = read_catalogue(out)
    assert cat.column("BLEND_BRIGHTEST").sum() == len(cat) // 2
    assert cat.column("P_BLEND_BRIGHTEST").max() == 1.0


@pytest.mark.parametrize("reference", [None, 14.0])
def test_every_flaggers_header_cards_fit_a_fits_card(reference):
    """Provenance cards are written into catalogue headers: each must fit in 80
    characters without astropy truncating its comment (a warning the CLI turns
    into an error), whatever the flagger's options."""
    import warnings

    from astropy.io import fits

    from blendflag.config import load_pipeline_config
    from blendflag.flagging.flaggers import make_flaggers

    pm = get_plugin_manager()
    names = sorted(get_flaggers(pm))
    options = {n: {"reference_noise": reference} for n in names} if reference else None
    for flagger in make_flaggers(pm, names, load_pipeline_config(None), options):
        header = fits.Header()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for key, value, comment in flagger.provenance():
                header[key] = (value, comment)
            header.tostring()
        assert all(len(card.image) == 80 for card in header.cards)


# ---------------------------------------------------------------------------
# Plugins declare, the core asks: flagger options, detectors, commands, training
# ---------------------------------------------------------------------------


def _plugin(name, **hooks):
    """A plugin module named ``name`` with the given hook functions."""
    plugin = types.ModuleType(name)
    for hook, func in hooks.items():
        setattr(plugin, hook, hookimpl(func))
    return plugin


def _flagger_classes():
    """A third-party flagger that declares weights and threshold, and one that declares none."""
    import numpy as np

    from blendflag.flagging.flaggers import Flagger, FlagResult

    class Weighted(Flagger):
        name = "weighted"
        cli_options = ("weights", "threshold")
        seen: typing.ClassVar[list] = []

        def __init__(self, options=None):
            super().__init__(options)
            Weighted.seen.append(dict(self.options))

        def flag_stamps(self, stamps):
            return FlagResult(flag=np.zeros(len(stamps), bool))

    class Plain(Weighted):
        name = "plain"
        cli_options = ()

    return Weighted, Plain


def test_cli_overrides_reach_exactly_the_flaggers_that_declare_them():
    from blendflag.flagging.flaggers import cli_overrides

    weighted, plain = _flagger_classes()
    classes = {"weighted": weighted, "plain": plain}
    names = ["weighted", "plain"]
    values = {"weights": "w.npz", "threshold": 0.3, "views": None, "backend": ""}
    assert cli_overrides(classes, names, values) == {
        "weighted": {"weights": "w.npz", "threshold": 0.3},
        "plain": {},
    }
    named = cli_overrides(classes, names, {"weights": "weighted=a.npz"})
    assert named == {"weighted": {"weights": "a.npz"}, "plain": {}}
    with pytest.raises(BlendflagError, match=r"names 'plain', which takes no weights"):
        cli_overrides(classes, names, {"weights": "weighted=a.npz,plain=b.npz"})
    with pytest.raises(BlendflagError, match=r"not among the flaggers asked for \(plain\)"):
        cli_overrides(classes, ["plain"], {"weights": "weighted=a.npz"})


def test_builtin_declarations_keep_the_old_routing():
    """Networks take weights/threshold/views, the SExtractor rule takes the backend."""
    from blendflag.flagging.flaggers import flagger_overrides

    pm = get_plugin_manager()
    names = ["sextractor", "vgg16", "oneclass", "siamese"]
    got = flagger_overrides(pm, names, weights="w.npz", threshold=0.4, views=2, backend="sep")
    assert got["sextractor"] == {"backend": "sep"}
    for name in names[1:]:
        assert got[name] == {"weights": "w.npz", "threshold": 0.4, "views": 2}


def test_third_party_flagger_declaring_weights_gets_them(detected):
    """``--weights``/``--threshold`` reach a plugin's flagger because it declares them."""
    from blendflag.cli import build_parser

    weighted, _ = _flagger_classes()
    weighted.seen.clear()
    plugin = _plugin("weighted", blendflag_register_flaggers=lambda: [weighted])
    pm = get_plugin_manager(extra_plugins=[("weighted", plugin)])
    out = detected["tmp"] / "w.fits"
    argv = ["flag", detected["catalogue"], "--image", detected["image"], "--flaggers"]
    argv += ["weighted", "--weights", "my.npz", "--threshold", "0.25", "--out", out]
    args = build_parser(pm).parse_args([str(a) for a in argv])
    assert args.func(args, pm) == 0
    assert weighted.seen[-1] == {"weights": "my.npz", "threshold": 0.25}


def test_weights_for_a_flagger_that_takes_none_is_one_line_error(detected, tmp_path, capsys):
    out = tmp_path / "x.fits"
    code, _, err = run_cli(
        [
            *("flag", detected["catalogue"], "--image", detected["image"]),
            *("--flaggers", "sextractor", "--weights", "sextractor=w.npz", "--out", out),
        ],
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --weights names 'sextractor', which takes no weights")
    assert not out.exists()


def test_backends_are_the_registered_detectors(small_field, capsys):
    """A plugin's detector becomes a --backend choice and answers for it."""
    from astropy.table import Table

    from blendflag.cli import build_parser
    from blendflag.flagging.detectors import Detector
    from blendflag.plugins import get_detectors

    class Fake(Detector):
        name = "fake"

    def blendflag_register_detectors():
        return [Fake]

    def blendflag_detect(image, weight, config):
        if config.backend != "fake":
            return None
        return Table({"NUMBER": [1], "X_IMAGE": [3.0], "Y_IMAGE": [4.0], "FLAGS": [2]})

    plugin = _plugin(
        "fake_det",
        blendflag_register_detectors=blendflag_register_detectors,
        blendflag_detect=blendflag_detect,
    )
    pm = get_plugin_manager(extra_plugins=[("fake_det", plugin)])
    detectors = get_detectors(pm)
    assert {"sep", "sextractor", "fake"} <= set(detectors)
    assert detectors["sep"].available() and detectors["fake"].available()
    out = small_field["tmp"] / "fake.fits"
    argv = ["detect", str(small_field["image"]), "--out", str(out), "--backend", "fake"]
    args = build_parser(pm).parse_args(argv)
    assert args.func(args, pm) == 0
    assert "1 sources (1 deblended)" in capsys.readouterr().out
    # without the plugin, "fake" is not a choice of detect or evaluate
    for cmd in (argv, ["evaluate", "--dataset", "great3", "--backend", "fake"]):
        with pytest.raises(SystemExit) as exc:
            run_cli(cmd, capsys)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: argument --backend: invalid choice: 'fake'")


def test_duplicate_detector_names_rejected():
    from blendflag.flagging.detectors import Detector
    from blendflag.plugins import get_detectors

    other = type("OtherSep", (Detector,), {"name": "sep"})
    plugin = _plugin("dup_det", blendflag_register_detectors=lambda: [other])
    pm = get_plugin_manager(extra_plugins=[("dup_det", plugin)])
    with pytest.raises(PluginError, match="two plugins register a detector named 'sep'"):
        get_detectors(pm)


def test_plugins_command_lists_detectors_and_trainable_flaggers(capsys):
    code, out, err = run_cli(["plugins", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert {"sep", "sextractor"} <= set(data["detectors"])
    assert "sep" in data["detectors_available"]
    assert {"vgg16", "oneclass", "siamese"} <= set(data["trainable_flaggers"])
    assert "sextractor" not in data["trainable_flaggers"]


def test_builtin_commands_come_from_the_hook(third_party_plugin, monkeypatch, capsys):
    """Built-ins register through blendflag_register_commands, listed before a plugin's."""
    code, out, _ = run_cli([], capsys)
    assert code == 0
    order = [out.index(f"    {c}") for c in ("plugins", "detect", "flag", "bench", "neighbours")]
    assert order == sorted(order)
    code, out, _ = run_cli(["neighbours"], capsys)
    assert code == 0 and "neighbour radius" in out
    # cli.py itself lists no command: block the built-in commands plugin and they are gone
    monkeypatch.setenv("BLENDFLAG_DISABLE_PLUGINS", "commands")
    with pytest.raises(SystemExit) as exc:
        run_cli(["plugins"], capsys)
    assert exc.value.code == 2 and "invalid choice: 'plugins'" in capsys.readouterr().err
    code, out, _ = run_cli(["neighbours"], capsys)
    assert code == 0 and "neighbour radius" in out


def _trainable_plugin(tmp_path, monkeypatch):
    """A single-file third-party plugin whose flagger ships ``train_mine.yaml`` beside it."""
    import importlib

    site = tmp_path / "site"
    (site / "mine_configs").mkdir(parents=True)
    (site / "mine_configs" / "train_mine.yaml").write_text("method: mine\nepochs: 1\n")
    (site / "blendflag_mine.py").write_text(
        "from blendflag import hookimpl\n"
        "from blendflag.flagging.flaggers import Flagger\n\n\n"
        "class Mine(Flagger):\n"
        "    name = 'mine'\n"
        "    trainable = True\n"
        "    training_config = 'mine_configs/train_mine.yaml'\n"
        "    calls = []\n\n"
        "    @classmethod\n"
        "    def train(cls, config_path, out, **kwargs):\n"
        "        cls.calls.append((config_path, out, kwargs))\n"
        "        return {'finished': False, 'epochs': 0}\n\n\n"
        "@hookimpl\n"
        "def blendflag_register_flaggers():\n"
        "    return [Mine]\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    module = importlib.import_module("blendflag_mine")
    return module, site


def test_train_asks_the_flagger_for_its_config(tmp_path, monkeypatch, capsys):
    import sys

    from blendflag.cli import build_parser

    module, site = _trainable_plugin(tmp_path, monkeypatch)
    try:
        pm = get_plugin_manager(extra_plugins=[("mine", module)])
        out = tmp_path / "w.npz"
        args = build_parser(pm).parse_args(["train", "--method", "mine", "--out", str(out)])
        assert args.func(args, pm) == 0
        config_path, written, kwargs = module.Mine.calls[-1]
        assert config_path == site / "mine_configs" / "train_mine.yaml"
        assert written == out and kwargs["resume"] is False
        assert "continue with --resume" in capsys.readouterr().out
    finally:
        sys.modules.pop("blendflag_mine", None)


def test_train_default_is_the_first_trainable_configured_flagger(tmp_path, monkeypatch, capsys):
    """Without --method or --config: the vgg16 flagger and its own shipped config."""
    from blendflag_plugins.vgg16 import VGG16Flagger

    calls = []

    def fake_train(cls, config_path, out, **kwargs):
        calls.append((cls.name, config_path))
        return {"finished": False, "epochs": 0}

    monkeypatch.setattr(VGG16Flagger, "train", classmethod(fake_train))
    code, _, err = run_cli(["train", "--out", tmp_path / "w.npz"], capsys)
    assert code == 0, err
    assert calls[0][0] == "vgg16" and calls[0][1].name == "train_vgg16_onerun.yaml"
    assert calls[0][1] == VGG16Flagger.training_config_path() and calls[0][1].is_file()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--method", "sextractor"], "flagger 'sextractor' cannot be trained"),
        (["--method", "nope"], "unknown flagger 'nope'"),
        (["--method", "vgg16,oneclass"], "train one flagger at a time"),
    ],
)
def test_train_refuses_what_cannot_be_trained(argv, match, tmp_path, capsys):
    code, _, err = run_cli(["train", *argv, "--out", tmp_path / "w.npz"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert match in err


def test_base_flagger_declares_nothing():
    from blendflag.flagging.flaggers import Flagger

    assert Flagger.cli_options == () and not Flagger.trainable
    assert Flagger.training_config_path() is None
    with pytest.raises(NotImplementedError, match="cannot be trained"):
        Flagger.train("c.yaml", "w.npz")
