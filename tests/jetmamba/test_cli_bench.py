"""The bench command line: exactly one of --kernels / --bundle, options that belong to one of them,
and the help of bench and doctor."""

from __future__ import annotations

import pytest

from jetmamba.cli import main


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "exactly one of --kernels"),
        (["--kernels", "--backend", "onnxruntime"], "choose from gpu, emu"),
    ],
)
def test_bench_needs_one_mode(args, message, capsys):
    assert main(["bench", *args]) != 0
    assert message in capsys.readouterr().err


def test_kernels_and_bundle_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:  # argparse's own error, exit status 2
        main(["bench", "--kernels", "--bundle", "b"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_help_explains_both_commands(capsys):
    for command in ("bench", "doctor"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--bundle" in out and "--prompt-len" in out and "--plot" in out and "jetmamba doctor" in out


def test_plot_without_matplotlib_is_an_error_before_running(monkeypatch, capsys, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["bench", "--bundle", str(tmp_path), "--backend", "onnxruntime", "--plot", "x.png"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'jetmamba[plot]'" in err[0]
