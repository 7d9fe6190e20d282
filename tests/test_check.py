"""python -m infodrop check: the table covers every runnable backend and passes."""

import subprocess
import sys

import infodrop
from infodrop import check


def test_check_reports_every_cpu_backend(capsys):
    assert check.main(["--shape", "3", "5", "7", "--dtypes", "float32", "bfloat16"]) == 0
    out = capsys.readouterr().out
    expected = [name for name in ("cpu", "reference") if infodrop.backends()[name]]
    for name in expected:
        assert f"gradcheck {name:<10} log_normal   float64: passed" in out
        assert sum(line.startswith(f"{name:<10} bfloat16") for line in out.splitlines()) == 2
    assert " NO" not in out


def test_check_flags_a_wrong_backend(capsys, monkeypatch):
    """A backend whose z is off by 1% must be reported as failing."""
    real = infodrop.functional.information_dropout

    def off_by_one_percent(*args, **kwargs):
        z, kl = real(*args, **kwargs)
        return z * 1.01, kl

    monkeypatch.setattr(check.functional, "information_dropout", off_by_one_percent)
    assert check.main(["--shape", "2", "9", "--dtypes", "float32"]) == 1
    assert " NO" in capsys.readouterr().out


def test_check_command_line_rejects_bad_arguments():
    run = subprocess.run([sys.executable, "-m", "infodrop", "check", "--dtypes", "int8"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--dtypes" in run.stderr
