"""The installable package: ``python -m build`` makes an sdist and, from it, a wheel that carry
everything the commands need (C sources, web assets); installed into a fresh virtual environment
away from the checkout, the commands train, collect and serve from the installed copy."""

import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import httpx
import pytest

import solulab

ROOT = Path(__file__).resolve().parent.parent
BUILD_LEFT_OUT = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                        ".pytest_cache")
USER_OUTPUT = {"solulab-demo", "runs"}  # what running the commands leaves in the checkout's root


def left_out(directory: str, names: list[str]) -> set[str]:
    """What the copy of the checkout leaves out (``solulab/runs`` is code, ``runs/`` is not)."""
    skipped = BUILD_LEFT_OUT(directory, names)
    return skipped | (USER_OUTPUT & set(names)) if Path(directory) == ROOT else skipped


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment outside the checkout with the built wheel installed; its
    dependencies come from this environment's site-packages (no network, no second torch)."""
    pytest.importorskip("build")
    base = tmp_path_factory.mktemp("package")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=left_out)
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", base / "dist",
                    source], check=True, capture_output=True)
    wheel = next((base / "dist").glob("solulab-*.whl"))
    sdist = next((base / "dist").glob("solulab-*.tar.gz"))
    assert wheel.name.startswith(f"solulab-{solulab.__version__}-")
    assert sdist.name == f"solulab-{solulab.__version__}.tar.gz"
    env_dir = base / "env"
    venv.create(env_dir, with_pip=True)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(subprocess.run([env_dir / "bin" / "python", "-c", where], check=True,
                                  capture_output=True, text=True).stdout.strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([env_dir / "bin" / "pip", "install", "--quiet", "--no-deps", "--no-index",
                    wheel], check=True, capture_output=True)
    return env_dir


def run_installed(env_dir: Path, cwd: Path, *args, **kwargs) -> subprocess.CompletedProcess:
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(cwd),
           "SOLULAB_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)


def test_the_installed_package_is_the_wheel_and_knows_its_version(installed, tmp_path):
    where = run_installed(installed, tmp_path, installed / "bin" / "python", "-c",
                          "import solulab; print(solulab.__file__)")
    assert where.stdout.startswith(str(installed)), where.stderr
    version = run_installed(installed, tmp_path, installed / "bin" / "python", "-m",
                            "solulab.cli", "--version")
    assert version.stdout.strip() == f"solulab {solulab.__version__}", version.stderr


def test_the_installed_commands_train_collect_and_serve(installed, small_corpus, tmp_path):
    bin_dir = installed / "bin"
    assert (bin_dir / "solulab").read_text().startswith(f"#!{bin_dir / 'python'}")
    assert run_installed(installed, tmp_path, "solulab", "--version").returncode == 0
    sizes = run_installed(installed, tmp_path, "solulab", "sizes")
    assert sizes.returncode == 0 and "2x192" in sizes.stdout, sizes.stderr
    trained = run_installed(
        installed, tmp_path, "solulab", "train", "--corpus", small_corpus, "--act", "solu_ln",
        "--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--n-ctx", "32",
        "--batch-size", "4", "--steps", "3", "--device", "cpu", "--out", "runs/tiny", timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "Validation loss at the end" in (tmp_path / "runs/tiny/README.md").read_text()
    collected = run_installed(installed, tmp_path, "solulab", "neurons", "collect", "runs/tiny",
                              "--tokens", "512", timeout=300)
    assert collected.returncode == 0, collected.stderr
    assert list((tmp_path / "cache" / "kernels").glob("*.so"))  # the C pass built from the wheel
    server = subprocess.Popen(["solulab", "serve", "--runs", "runs", "--port", "8765"],
                              cwd=tmp_path, env={"PATH": f"{bin_dir}:/usr/bin:/bin",
                                                 "HOME": str(tmp_path)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            assert server.poll() is None, server.communicate()
            try:
                page = httpx.get("http://127.0.0.1:8765/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert page.status_code == 200 and "tiny" in page.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_version_is_written_once():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = "' not in pyproject
    written = [path for path in (ROOT / "solulab").rglob("*.py")
               if "__version__ = " in path.read_text()]
    assert written == [ROOT / "solulab" / "__init__.py"]
