"""scripts/setup.sh and scripts/run.sh: install only when something changed, keep the console quiet.

Each test runs the real scripts in a throwaway checkout (a copy of scripts/ and pyproject.toml and
a stub package) with a throwaway venv (no pip in it) and a fake pip that records its calls and
"installs" by writing a .pth file. The project's own .venv is never touched.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_PIP = textwrap.dedent('''\
    """A stand-in for pip: record the call; `install -e ROOT[extra]` makes ROOT importable."""
    import glob, os, sys
    venv = os.environ["FAKE_VENV"]
    with open(os.environ["FAKE_PIP_CALLS"], "a") as calls:
        calls.write(" ".join(sys.argv[1:]) + "\\n")
    print("Obtaining file:///somewhere\\n" + "setuptools warning line\\n" * 30)
    if os.environ.get("FAKE_PIP_FAIL"):
        print("ERROR: No matching distribution found for notebook>=7")
        sys.exit(1)
    if "-e" in sys.argv:
        target = sys.argv[sys.argv.index("-e") + 1].split("[")[0]
        site = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))[0]
        with open(os.path.join(site, "fake_clipsurgery.pth"), "w") as pth:
            pth.write(target + "\\n")
        cli = os.path.join(venv, "bin", "clipsurgery")
        with open(cli, "w") as script:
            script.write("#!/bin/sh\\necho \\"[1/1] job ran with: $*\\"\\n")
        os.chmod(cli, 0o755)
''')


class Checkout:
    """A throwaway checkout with its own venv and fake pip."""

    def __init__(self, base: Path):
        self.root = base / "checkout"
        (self.root / "scripts").mkdir(parents=True)
        for name in ("setup.sh", "run.sh"):
            shutil.copy(REPO / "scripts" / name, self.root / "scripts" / name)
        shutil.copy(REPO / "pyproject.toml", self.root / "pyproject.toml")
        (self.root / "clipsurgery_widgets").mkdir()
        (self.root / "clipsurgery_widgets" / "__init__.py").write_text("")
        self.venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True)
        self.calls = base / "pip-calls.txt"
        fake_pip = base / "fake_pip.py"
        fake_pip.write_text(FAKE_PIP)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self.env.update(CLIPSURGERY_VENV=str(self.venv), CLIPSURGERY_PIP=f"{sys.executable} {fake_pip}",
                        FAKE_VENV=str(self.venv), FAKE_PIP_CALLS=str(self.calls))

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        # Run from the checkout, as people do: its package folder there must not pass for an install.
        return subprocess.run(["bash", str(self.root / "scripts" / script), *args], capture_output=True,
                              text=True, env={**self.env, **env}, cwd=self.root, timeout=60)

    def pip_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def pth(self) -> Path:
        return next(self.venv.glob("lib/python*/site-packages")) / "fake_clipsurgery.pth"


@pytest.fixture
def checkout(tmp_path) -> Checkout:
    return Checkout(tmp_path)


def test_first_call_installs_quietly_and_second_call_does_not_call_pip(checkout):
    first = checkout.run("setup.sh")
    assert first.returncode == 0, first.stderr
    assert checkout.pip_calls() == [f"install -e {checkout.root}"]
    # One line of its own; pip's chatter went to the log.
    assert first.stdout.count("\n") == 1 and first.stdout.startswith("[setup] installing"), first.stdout
    assert "setuptools warning" not in first.stdout + first.stderr
    assert "setuptools warning" in (checkout.venv / ".clipsurgery-setup.log").read_text()

    second = checkout.run("setup.sh")
    assert second.returncode == 0, second.stderr
    assert checkout.pip_calls() == [f"install -e {checkout.root}"]
    assert second.stdout == "" and second.stderr == ""


def test_pyproject_content_change_reinstalls_but_a_touch_does_not(checkout):
    assert checkout.run("setup.sh").returncode == 0
    pyproject = checkout.root / "pyproject.toml"
    os.utime(pyproject, (pyproject.stat().st_atime, pyproject.stat().st_mtime + 100))
    assert checkout.run("setup.sh").returncode == 0
    assert len(checkout.pip_calls()) == 1
    pyproject.write_text(pyproject.read_text() + "\n# a new dependency\n")
    assert checkout.run("setup.sh").returncode == 0
    assert len(checkout.pip_calls()) == 2


def test_package_missing_or_from_another_checkout_reinstalls(checkout, tmp_path):
    assert checkout.run("setup.sh").returncode == 0
    checkout.pth().unlink()
    assert checkout.run("setup.sh").returncode == 0
    assert len(checkout.pip_calls()) == 2
    other = tmp_path / "other-checkout"
    (other / "clipsurgery_widgets").mkdir(parents=True)
    (other / "clipsurgery_widgets" / "__init__.py").write_text("")
    checkout.pth().write_text(f"{other}\n")
    assert checkout.run("setup.sh").returncode == 0
    assert len(checkout.pip_calls()) == 3
    assert checkout.pth().read_text().strip() == str(checkout.root)


def test_venv_python_change_reinstalls(checkout):
    assert checkout.run("setup.sh").returncode == 0
    stamp = checkout.venv / ".clipsurgery-stamp"
    recorded_python = stamp.read_text().split()[1]
    assert Path(recorded_python).name.startswith("python")
    # As if the venv had been made by another interpreter: the recorded one no longer matches.
    stamp.write_text(stamp.read_text().replace(recorded_python, "/opt/old/bin/python3.10"))
    assert checkout.run("setup.sh").returncode == 0
    assert len(checkout.pip_calls()) == 2


def test_test_extra_has_its_own_stamp_which_also_serves_the_plain_install(checkout):
    assert checkout.run("setup.sh").returncode == 0
    assert checkout.run("setup.sh", "--test").returncode == 0
    assert checkout.pip_calls() == [f"install -e {checkout.root}", f"install -e {checkout.root}[test]"]
    assert checkout.run("setup.sh", "--test").returncode == 0
    assert checkout.run("setup.sh").returncode == 0
    assert len(checkout.pip_calls()) == 2


def test_pip_failure_shows_the_log_tail_exits_nonzero_and_retries_next_time(checkout):
    failed = checkout.run("setup.sh", FAKE_PIP_FAIL="1")
    assert failed.returncode != 0
    assert "No matching distribution found for notebook" in failed.stderr
    assert not (checkout.venv / ".clipsurgery-stamp").exists()
    assert checkout.run("setup.sh").returncode == 0
    assert len(checkout.pip_calls()) == 2


def test_run_sh_second_call_prints_only_the_jobs_lines(checkout):
    first = checkout.run("run.sh", "explain", "sample:cat")
    assert first.returncode == 0, first.stderr
    second = checkout.run("run.sh", "explain", "sample:cat")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["[1/1] job ran with: explain sample:cat"]
    assert second.stderr == ""
    assert len(checkout.pip_calls()) == 1


def test_a_new_venv_is_created_and_pip_upgraded_first(tmp_path):
    checkout = Checkout(tmp_path)
    shutil.rmtree(checkout.venv)
    result = checkout.run("setup.sh")
    assert result.returncode == 0, result.stderr
    assert (checkout.venv / "bin" / "python").exists()
    assert checkout.pip_calls() == ["install --upgrade pip", f"install -e {checkout.root}"]


def test_run_sh_notebook_without_notebook7_says_how_to_install_it(checkout):
    result = checkout.run("run.sh", "notebook")
    assert result.returncode == 1
    assert "setup.sh --test" in result.stderr and result.stdout.count("\n") <= 1
