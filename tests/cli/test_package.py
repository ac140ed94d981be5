"""The package as pip installs it: built into a wheel, installed outside the checkout, and run
from another folder, where the shipped workflows are found by name."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.processes import clean_env

ROOT = Path(__file__).parents[2]
IGNORED = (".*", "build", "dist", "data", "*.egg-info", "__pycache__", "tests", "benchmarks")


def test_the_installed_package_runs_from_any_folder(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes `build/` beside the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(wheels), str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("switchboard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"bot/workflows/{name}.yaml" for name in ("ecommerce", "helpdesk", "content")}
    assert shipped | {"bot/store/schema.sql", "bot/py.typed"} <= names
    assert not any(name.startswith("tests/") for name in names)

    target = tmp_path / "installed"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True)
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = clean_env(PYTHONPATH=os.pathsep.join([str(target), *site.getsitepackages()]))

    def switchboard(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        code = "import sys; from bot.cli import main; sys.argv[0] = 'switchboard'; sys.exit(main())"
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            input=stdin,
            cwd=away,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    located = switchboard("check", "helpdesk")
    assert located.returncode == 0, located.stderr
    assert "helpdesk: ok (3 agents" in located.stdout
    chat = switchboard("console", "--thread", "t", stdin="I want to return my order\n")
    assert chat.returncode == 0, chat.stderr
    assert "Switchboard console: workflow ecommerce" in chat.stdout
    assert "Returns: Returns here." in chat.stdout
    assert "Resume this conversation with: switchboard console --thread t" in chat.stdout
    assert str(target) in switchboard("doctor").stdout  # the installed copy, not the checkout
    missing = switchboard("check", "nope")
    assert missing.returncode == 1
    assert (
        "give the path of a workflow file (--workflow or BOT_WORKFLOW), or the name of a "
        "shipped one: content, content_pipeline, ecommerce, helpdesk" in missing.stderr
    )
