"""The built wheel: it carries every file of the package, and installed from it (not editable)
the service finds its web page."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "tripletface"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source (the build leaves build/ in what it builds)."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(out), str(source)], check=True, capture_output=True)
    (built,) = out.glob("tripletface-*.whl")
    return built


def test_the_wheel_holds_every_file_of_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    files = [
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert "tripletface/service/static/index.html" in files
    assert sorted(set(files) - names) == []


def test_installed_from_the_wheel_the_service_finds_its_page(wheel, tmp_path):
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
    subprocess.run([*install, "--target", str(site), str(wheel)], check=True, capture_output=True)
    # -I: neither the working directory nor PYTHONPATH, so only the target and site-packages.
    probe = (
        f"import sys; sys.path.insert(0, {str(site)!r}); import tripletface.service.app as app; "
        "print(app.__file__); print((app.STATIC / 'index.html').is_file())"
    )
    result = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    location, found = result.stdout.split()
    assert Path(location).is_relative_to(site) and found == "True"
