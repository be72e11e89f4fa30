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
    tensorflow = list(venv.rglob("tensorflow"))
    print(f"TensorFlow in the serving venv: {'yes' if tensorflow else 'no'}")


if __name__ == "__main__":
    main()
