"""Size of the serving install, as Heroku counts it: a fresh venv with requirements.txt,
packed with gzip. Prints figures.

    .venv/bin/python benchmarks/deploy_size.py
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="deploy-size-"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=REPO, check=True)
    archive = work / "venv.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(venv, arcname="venv")
    print(f"serving venv installed: {folder_size(venv) / 1e6:.0f} MB")
    print(f"serving venv packed with gzip: {archive.stat().st_size / 1e6:.0f} MB (Heroku slug limit 500 MB)")
    probe = "import importlib.util; print(importlib.util.find_spec('tensorflow') is not None)"
    has_tf = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    print(f"TensorFlow importable in the serving venv: {has_tf}")
    biggest = sorted(((folder_size(p), p.name) for p in (venv / "lib").glob("python*/site-packages/*") if p.is_dir()), reverse=True)
    print("largest packages: " + ", ".join(f"{name} {size / 1e6:.0f} MB" for size, name in biggest[:6]))


if __name__ == "__main__":
    main()
