"""The API reference site (MkDocs + mkdocstrings, mkdocs.yml) builds offline with warnings as
errors, so a docstring or a guide that breaks it fails the suite."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_guide_is_in_the_site():
    config = (ROOT / "mkdocs.yml").read_text()
    guides = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    missing = [g for g in guides if f" {g}" not in config]
    assert not missing, f"docs pages missing from mkdocs.yml nav: {missing}"


def test_reference_builds_strictly(tmp_path):
    import importlib.util

    assert importlib.util.find_spec("mkdocstrings"), "the docs extra: pip install -e '.[docs]'"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "site" / "api" / "inference" / "index.html").read_text()
    assert "load_run" in page and "build_index" in page
