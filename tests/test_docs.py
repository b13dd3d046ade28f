"""Every shell command and Python snippet in README.md and docs/*.md runs as written.

Each page runs top to bottom in its own scratch directory: its ```python blocks in one namespace,
its ```bash commands through the command line (``metrickit ...`` in-process, anything else with
bash), in the order they appear, so a command can use the run directory an earlier one wrote.

Nothing is skipped silently. The explicit reductions that keep the suite fast, and the commands
that cannot run inside a test suite, are these:

* ``FAST``: ``metrickit train`` runs 2 batches per epoch and at most 1 epoch (2 for a stated
  count above 10, so that ``--resume ... --epochs 20`` still trains on); ``metrickit demo`` runs 1
  epoch of 2 batches; ``metrickit recsys train`` runs 1 epoch on the first 30 users.
* ``FILES``: the user's own files a page names (``my_run.yaml``, ``train.yaml``, an image folder
  ``path/to/images``) are created, small, in the scratch directory first.
* ``NOT_RUN``: installation (pip, make), which needs the network and builds a fresh virtual
  environment; multi-process launches (torchrun), whose training is tested with 2 and 3 gloo
  processes in tests/test_distributed.py; ``metrickit text`` commands, which fine-tune a
  transformer on the user's files, run on a tiny model in tests/test_text_cli.py. Every shell
  line must be run or match one of these patterns, or the test fails.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)
NOT_RUN = {
    r"^pip install ": "installs packages (network)",
    r"^make (demo|test|lint|bench|install|docs)\b": "builds .venv and runs the suite itself",
    r"^torchrun ": "several processes: see tests/test_distributed.py",
    r"^metrickit text (train|evaluate|encode) ": "fine-tunes or runs a transformer on files of "
    "the user's (minutes on a CPU): tests/test_text_cli.py runs these commands on a tiny model",
    r"^metrickit train --dataset digits59 ": "reads the PNG folder and backbone weights of the "
    "real run the page describes: tests/test_open_trainer.py runs the same streamed, augmented, "
    "pretrained-backbone command end to end on PNGs it writes",
}


def blocks(page: Path) -> list[tuple[str, str]]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def shell_commands(text: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(shlex.join(words))
    return out


def not_run_reason(command: str) -> str | None:
    return next((why for pat, why in NOT_RUN.items() if re.search(pat, command)), None)


def fast(argv: list[str]) -> list[str]:
    """The FAST reductions of the module docstring."""
    argv = list(argv)

    def cap_epochs(default: int | None) -> None:
        if "--epochs" in argv:
            i = argv.index("--epochs") + 1
            argv[i] = "2" if int(argv[i]) > 10 else "1"
        elif default is not None:
            argv.extend(["--epochs", str(default)])

    if argv[:1] == ["train"]:
        cap_epochs(None if "--resume" in argv else 1)
        argv += ["--batches-per-epoch", "2"] if "--resume" not in argv else []
    elif argv[:1] == ["demo"]:
        cap_epochs(1)
    elif argv[:2] == ["recsys", "train"]:
        cap_epochs(1)
        argv += ["--max-users", "30"]
    return [*argv, "--threads", "1"] if "--threads" not in argv and argv[:1] != ["--help"] else argv


def make_files(scratch: Path) -> None:
    """The FILES of the module docstring."""
    from PIL import Image

    (scratch / "my_run.yaml").write_text(
        "dataset: digits\nloss: contrastive\nloss_params: {margin: 0.5}\nbatches_per_epoch: 2\n"
    )
    (scratch / "train.yaml").write_text("dataset: digits\nloss: triplet\nbatches_per_epoch: 2\n")
    rng = np.random.default_rng(0)
    for c in range(4):
        folder = scratch / "path" / "to" / "images" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(15):  # 60 images: a 20% test split holds more than Recall@8 needs
            arr = (rng.random((16, 16)) * 60 + c * 60).astype(np.uint8)
            Image.fromarray(arr, "L").save(folder / f"{i}.png")


def run_shell(command: str, where: str, monkeypatch) -> None:
    from metrickit.cli import demo, main

    words = shlex.split(command)
    if words[0] == "metrickit":
        monkeypatch.setattr(demo, "DEMO_CONFIG", {**demo.DEMO_CONFIG, "batches_per_epoch": 2})
        argv = fast(words[1:])
        assert main(argv) == 0, f"{where}: {command} (run as metrickit {shlex.join(argv)})"
        return
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{where}: {command}\n{done.stderr}"


def test_every_page_has_been_found():
    assert (ROOT / "README.md") in PAGES and len(PAGES) >= 8
    assert sum(len(blocks(p)) for p in PAGES) >= 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_runs_as_written(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    make_files(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    try:
        for n, (language, text) in enumerate(blocks(page)):
            where = f"{page.name} block {n}"
            if language == "python":
                exec(compile(text, where, "exec"), namespace)
                continue
            for command in shell_commands(text):
                if not_run_reason(command) is None:
                    run_shell(command, where, monkeypatch)
    finally:
        torch.set_num_threads(threads)
        capsys.readouterr()


def test_the_reductions_are_what_the_docstring_says():
    assert fast(["train", "--dataset", "digits", "--epochs", "10"]) == [
        "train", "--dataset", "digits", "--epochs", "1", "--batches-per-epoch", "2",
        "--threads", "1",
    ]  # fmt: skip
    assert fast(["train", "--resume", "r", "--epochs", "20"])[:4] == [
        "train", "--resume", "r", "--epochs"] and "2" in fast(["train", "--resume", "r",
                                                               "--epochs", "20"])  # fmt: skip
    assert not_run_reason("pip install -e .") and not_run_reason("make test")
    assert not_run_reason("metrickit train") is None


def test_documented_shell_commands_outside_the_cli_are_all_accounted_for():
    for page in PAGES:
        for language, text in blocks(page):
            if language != "bash":
                continue
            for command in shell_commands(text):
                head = shlex.split(command)[0]
                assert head in ("metrickit", "printf", "echo", "cat", "ls", "python") or (
                    not_run_reason(command)
                ), f"{page.name}: {command!r} is neither run nor listed in NOT_RUN"




def test_readme_install_lists_every_carrier_package():
    """Each data-carrier package pinned in the Makefile (and named by an install hint in the
    code) is in the README's install section, with the same version."""
    makefile = (ROOT / "Makefile").read_text()
    carriers = set(re.findall(r"([a-z][\w-]+==[\d.]+)", makefile.split("--no-deps", 1)[1]))
    hints = {
        m for path in (ROOT / "src").rglob("*.py")
        for m in re.findall(r"pip install --no-deps ([a-z][\w-]+==[\d.]+)", path.read_text())
    }  # fmt: skip
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Install"):].split("\n## ", 1)[0]
    assert carriers and hints <= carriers | hints
    missing = sorted(p for p in carriers | hints if f"--no-deps {p}" not in install)
    assert not missing, f"carriers missing from the README's install section: {missing}"


def test_no_stale_messages_in_the_code():
    """Messages must name options that exist and not ask for core dependencies."""
    stale = ("install pandas", "pass label_column=", "pass image_size=")
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        assert not [s for s in stale if s in text], path
