"""scripts/setup.sh on a machine that lacks the Debian packages: the apt branch, run for real with stand-ins.

A stand-in `apt-get` first on PATH records its arguments and environment; a stand-in PYTHON records the pip calls
instead of installing; FASHION_MNIST_DIR and CHROMIUM point where nothing is, so both packages look absent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup.sh"


def stand_in(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """A PATH whose apt-get (and sudo, for a non-root user) log their calls, and the environment for setup.sh."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    # one line per call: the frontend the call would run under, then its arguments
    stand_in(bin_dir / "apt-get", f'echo "apt-get DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-unset}} $*" >> {log}\n'
                                  f'[ -z "${{APT_FAILS:-}}" ] || [ "$1" != install ]\n')
    stand_in(bin_dir / "sudo", f'echo "sudo $*" >> {log}\nexec "$@"\n')
    stand_in(tmp_path / "python", f'echo "python $*" >> {log}\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(tmp_path / "python"),
           "FASHION_MNIST_DIR": str(tmp_path / "no-dataset"), "CHROMIUM": str(tmp_path / "no-chromium")}
    return env, log


def run_setup(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SETUP), *args], env=env, capture_output=True, text=True, timeout=60)


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path: no sudo")
def test_as_root_installs_the_dataset_without_sudo(machine):
    env, log = machine
    result = run_setup(env)
    assert result.returncode == 0, result.stderr
    assert calls(log) == [
        "apt-get DEBIAN_FRONTEND=noninteractive update -qq",
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq dataset-fashion-mnist",
        "python -m pip install -q torch==2.13.0",
        "python -m pip install -q -e .",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path: no sudo")
def test_test_setup_also_installs_chromium(machine):
    env, log = machine
    result = run_setup(env, "--test")
    assert result.returncode == 0, result.stderr
    assert calls(log)[1] == "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq dataset-fashion-mnist chromium"
    assert calls(log)[-1] == "python -m pip install -q -e .[test]"


def test_present_packages_are_not_installed(machine, tmp_path):
    env, log = machine
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-images-idx3-ubyte.gz").write_bytes(b"")
    stand_in(tmp_path / "chromium", "")
    result = run_setup({**env, "FASHION_MNIST_DIR": str(data), "CHROMIUM": str(tmp_path / "chromium")}, "--test")
    assert result.returncode == 0, result.stderr
    assert not any(line.startswith(("apt-get", "sudo")) for line in calls(log))


def test_a_user_goes_through_sudo(machine, tmp_path):
    env, log = machine
    fake_id = tmp_path / "bin" / "id"
    stand_in(fake_id, 'echo 1000\n')  # a non-root user
    result = run_setup(env)
    assert result.returncode == 0, result.stderr
    assert calls(log)[:4] == [
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "apt-get DEBIAN_FRONTEND=noninteractive update -qq",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist",
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq dataset-fashion-mnist",
    ]


def test_a_failing_apt_names_the_package_and_stops_before_pip(machine):
    env, log = machine
    result = run_setup({**env, "APT_FAILS": "1"}, "--test")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "dataset-fashion-mnist chromium" in last and "by hand" in last
    assert not any(line.startswith("python") for line in calls(log))


def test_no_apt_names_the_package(machine, tmp_path):
    env, log = machine
    (tmp_path / "bin" / "apt-get").unlink()
    # a PATH with bash and the basics but no apt-get: the stand-ins' folder and a folder of links to what we need
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("bash", "dirname", "id", "env"):
        found = subprocess.run(["bash", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        (tools / name).symlink_to(found)
    result = subprocess.run(["bash", str(SETUP)], env={**env, "PATH": f"{tmp_path / 'bin'}:{tools}"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("setup.sh: could not install dataset-fashion-mnist")
    assert "apt-get not found" in result.stderr
    assert calls(log) == []
