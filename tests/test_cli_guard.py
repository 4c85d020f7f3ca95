"""The CLI's top level: one-line errors for every failure, exit statuses (2 bad input, 1 bug,
130 Ctrl-C), --debug, --version, the usage text, foreign warnings silenced, start-up without JAX,
and `pkpd demo` never writing into a folder it did not create."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pkpd import cli
from pkpd.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def _subprocess(*args, code="from pkpd.cli import main; import sys; sys.exit(main())"):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def broken_cards(monkeypatch):
    """`pkpd cards` whose implementation raises what the test puts in ``box``."""
    box = {}

    def boom(args):
        warnings.warn("a foreign deprecation nobody can act on", FutureWarning, stacklevel=1)
        raise box["exc"]

    parser = cli.build_parser

    def patched():
        p = parser()
        sub = next(a for a in p._actions if isinstance(a, cli.argparse._SubParsersAction))
        sub.choices["cards"].set_defaults(func=boom)
        return p

    monkeypatch.setattr(cli, "build_parser", patched)
    return box


def test_unexpected_error_is_one_line_naming_action_exit_1(broken_cards, capsys):
    broken_cards["exc"] = ZeroDivisionError("division by zero")
    assert cli.main(["cards", "mycard.toml"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("pkpd cards: error: unexpected ZeroDivisionError while reading card "
                          "mycard.toml: division by zero")
    assert "--debug" in err and "Traceback" not in err
    assert "FutureWarning" not in err          # foreign warnings are silenced


def test_debug_shows_the_traceback(broken_cards):
    broken_cards["exc"] = ZeroDivisionError("division by zero")
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "cards", "x"])
    with pytest.raises(ZeroDivisionError):     # --debug in any position
        cli.main(["cards", "x", "--debug"])


@pytest.mark.parametrize("exc, code, needle", [
    (DataError("bad AMT", row=3, subject=7, value=-5, fix="use AMT >= 0"), 2,
     "pkpd cards: error: row 3 (ID 7): bad AMT; got -5. Fix: use AMT >= 0"),
    (KeyboardInterrupt(), 130, "pkpd cards: interrupted (Ctrl-C)"),
    (FileNotFoundError(2, "No such file", "nope.csv"), 2, "file not found: nope.csv"),
    (IsADirectoryError(21, "Is a directory", "somedir"), 2, "somedir is a folder"),
    (PermissionError(13, "Permission denied", "/root/x"), 2, "permission denied: /root/x"),
    (MemoryError(), 2, "out of memory while reading card x"),
    (OSError(28, "No space left on device", "out.csv"), 2, "No space left on device (out.csv)"),
])
def test_error_kinds_map_to_exit_status(broken_cards, capsys, exc, code, needle):
    broken_cards["exc"] = exc
    assert cli.main(["cards", "x"]) == code
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_pkpd_error_exit_code_attribute_is_honoured(broken_cards, capsys):
    class Stopped(DataError):
        exit_code = 130
    broken_cards["exc"] = Stopped("stopped; run again to resume")
    assert cli.main(["cards", "x"]) == 130


@pytest.mark.parametrize("argv, needle", [
    (["exposure", "anlotinib", "--regimen", "12 mg PO QD", "--days", "abc"],
     "pkpd exposure: error: argument --days: invalid float value: 'abc'. Fix: see `pkpd "
     "exposure --help`"),
    ([], "pkpd: error: the following arguments are required: COMMAND"),
    (["frob"], "invalid choice: 'frob'"),
])
def test_usage_errors_are_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as ex:
        cli.main(argv)
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_version_and_usage_list_every_command(capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(["--version"])
    assert ex.value.code == 0
    from pkpd import __version__
    assert capsys.readouterr().out.startswith(f"pkpd {__version__} (Python ")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("exposure", "predict", "simulate", "recist", "cards", "fit", "summary", "demo"):
        assert f"pkpd {cmd}" in out          # in the usage block
        assert f"    {cmd}" in out           # and in the command list


def test_help_and_import_do_not_load_heavy_libraries():
    code = ("import sys; from pkpd.cli import main\n"
            "try:\n    main(['fit', '--help'])\nexcept SystemExit:\n    pass\n"
            "import pkpd\n"
            "heavy = [m for m in ('jax', 'pymc', 'arviz', 'pandas', 'scipy', 'matplotlib') "
            "if m in sys.modules]\nprint('HEAVY', heavy)")
    p = _subprocess(code=code)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stdout


def test_float64_whether_jax_comes_first_or_later():
    for first in ("import jax; import pkpd", "import pkpd; import jax"):
        code = (f"{first}\nfrom pkpd.pk.engine import stack\nimport jax.numpy as jnp\n"
                "print(jnp.asarray(1.0).dtype)")
        p = _subprocess(code=code)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "float64", first


def test_public_names_still_importable():
    import pkpd
    for name in pkpd.__all__:
        assert getattr(pkpd, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pkpd.nope  # noqa: B018


def test_real_process_bad_input_exit_2_no_traceback():
    p = _subprocess("cards", "no_such_card")
    assert p.returncode == 2
    assert p.stderr.startswith("pkpd cards: error: no model card 'no_such_card'")
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1


@pytest.mark.parametrize("setup", ["file", "foreign_folder"])
def test_demo_never_writes_into_what_it_did_not_create(tmp_path, capsys, setup):
    target = tmp_path / "target"
    if setup == "file":
        target.write_text("precious")
    else:
        target.mkdir()
        (target / "report.md").write_text("precious")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert cli.main(["demo", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pkpd demo: error: --out {str(target)!r} is a ")
    assert "Fix:" in err
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
