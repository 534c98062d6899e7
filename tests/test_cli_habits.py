"""The command line's habits: --version, help on every option, a calibration bar with a total,
one-line errors from the model builder, and one input-file story (.npy per input or one .npz)."""
import argparse
import configparser
import logging
import pathlib

import numpy as np
import pytest

import npusim
import npusim_models as zoo
from npusim import cli
from npusim.quantize import NpzReader, calibrate
from npusim_models import build

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["--version"])
    assert e.value.code == 0
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert capsys.readouterr().out.strip() == f"npusim {cfg['metadata']['version']}" == f"npusim {npusim.__version__}"


def _subparsers(parser):
    for action in parser._actions:  # argparse keeps its subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_option_has_help():
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, sp in _subparsers(cli.build_parser())
               for a in sp._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []


def test_calibration_bar_has_a_total_and_warnings_go_above_it(tmp_path, capsys):
    x = np.concatenate([f["input"] for f in zoo.sample_inputs("digits_float", 5)])
    np.savez(tmp_path / "c.npz", input=x)
    reader = NpzReader(tmp_path / "c.npz", ["input"])
    assert len(reader) == 5

    class Warns:  # a library that logs while the bar is drawn, as onnxruntime's quantizer does
        def get_next(self):
            logging.getLogger().warning("a library warning")
            return reader.get_next()

        def __len__(self):
            return len(reader)

    calibrate(str(zoo.path("digits_float")), Warns(), progress=True)
    err = capsys.readouterr().err
    assert "/5 [" in err  # tqdm's "n/total [elapsed..." of a bar that knows its total
    assert "a library warning" in err and "WARNING:root:" not in err  # through tqdm.write, on lines of its own
    # each on a line of its own: the bar is cleared (carriage return) before it and redrawn after
    assert all(line.split("\r")[-1] == "a library warning" for line in err.split("\n") if "library" in line)


def test_model_builder_error_is_one_line(monkeypatch, capsys):
    def missing(*a, **k):
        raise ModuleNotFoundError("zoo model 'ppocr_det_float': rapidocr_onnxruntime is not installed; "
                                  "pip install 'npusim[zoo]'")
    monkeypatch.setattr(build.ppocr, "build", missing)
    assert build.main(["--all"]) == 2
    err = capsys.readouterr().err
    assert err == ("python -m npusim_models.build: error: zoo model 'ppocr_det_float': rapidocr_onnxruntime is not "
                   "installed; pip install 'npusim[zoo]'\n")


def test_input_npz_equals_input_npy(tmp_path, capsys):
    x = zoo.sample_inputs(zoo.DEFAULT, 1, seed=3)[0]["input"]
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "all.npz", input=x)
    outs = []
    for given in (["--input", f"input={tmp_path / 'x.npy'}"], ["--input", str(tmp_path / "all.npz")]):
        assert cli.main(["run", *given, "-o", str(tmp_path / "out.npz")]) == 0
        with np.load(tmp_path / "out.npz") as z:
            outs.append({k: z[k] for k in z.files})
    (expect,) = npusim.InferenceSession(zoo.path(zoo.DEFAULT)).run(None, {"input": x})
    np.testing.assert_array_equal(outs[0]["logits"], expect)
    np.testing.assert_array_equal(outs[1]["logits"], expect)
    assert cli.main(["verify", "--input", str(tmp_path / "all.npz"), "--mode", "npu"]) in (0, 1)
    assert "input sets: 1" in capsys.readouterr().out
    assert cli.main(["run", "--input", f"input={tmp_path / 'all.npz'}"]) == 2
    assert f"give it as --input {tmp_path / 'all.npz'}" in capsys.readouterr().err


def test_log_level_filters_library_lines(tmp_path, monkeypatch, capsys):
    x = np.concatenate([f["input"] for f in zoo.sample_inputs("digits_float", 3)])
    np.savez(tmp_path / "c.npz", input=x)
    get_next = NpzReader.get_next

    def warns(self):  # a library that logs during calibration, as onnxruntime's quantizer does
        logging.getLogger("onnxruntime.quantization").warning("a library warning")
        return get_next(self)
    monkeypatch.setattr(NpzReader, "get_next", warns)
    argv = ["quantize", str(zoo.path("digits_float")), "-o", str(tmp_path / "q.onnx"), "--calib",
            str(tmp_path / "c.npz")]
    root = logging.getLogger()
    level = root.level
    try:
        assert cli.main(["--log-level", "ERROR", *argv]) == 0
        assert "a library warning" not in capsys.readouterr().err
        assert cli.main(argv) == 0
        assert "a library warning" in capsys.readouterr().err
    finally:
        root.setLevel(level)
