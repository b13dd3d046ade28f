"""The run directory: refused when taken, locked against concurrent runs, atomic writes, and
faults that end in one line with nothing written (train, evaluate, recsys)."""

import builtins
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import metrickit as mk
from metrickit import rundir
from metrickit.cli import main
from metrickit.cli.train import flag_overrides

FLAGS = [
    "--dataset", "digits", "--model", "mlp", "--embedding-dim", "8", "-P", "4", "-K", "4",
    "--batches-per-epoch", "2", "--device", "cpu", "--quiet", "--threads", "1",
]  # fmt: skip
RECSYS = ["recsys", "train", "--dataset", "movielens-100k", "--max-users", "12", "--epochs", "1",
          "--dim", "4", "--quiet", "--threads", "1", "--show-users", "1"]  # fmt: skip


def error_of(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def snapshot(directory: Path) -> dict[str, bytes]:
    files = (p for p in directory.rglob("*") if p.is_file() and p.name != rundir.LOCK)
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def fitted_run(tmp_path) -> Path:
    args = mk.cli.build_parser().parse_args(["train", *FLAGS, "--epochs", "1"])
    config = mk.TrainConfig().merged({**flag_overrides(args), "output": str(tmp_path / "run")})
    mk.Trainer(config, progress=False).fit()
    return tmp_path / "run"


PYTHON = [sys.executable, "-c"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def holder(code: str) -> subprocess.Popen:
    """A second process running ``code`` (which prints 'ready' once it holds the lock)."""
    proc = subprocess.Popen(
        [*PYTHON, textwrap.dedent(code)], env=ENV, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=60)
    proc.stdout.close()


# ------------------------------------------------------------------------------ the lock
def test_a_second_process_is_refused_while_a_run_is_in_use(tmp_path, capsys):
    run = fitted_run(tmp_path)
    proc = holder(f"""
        import sys
        from metrickit import rundir
        with rundir.locked({str(run)!r}, "train"):
            print("ready", flush=True)
            sys.stdin.read()
    """)
    try:
        before = snapshot(run)
        assert "in use by another metrickit process" in error_of(capsys, ["evaluate", str(run)])
        err = error_of(capsys, ["train", "--resume", str(run), "--quiet", "--threads", "1"])
        assert "in use by another metrickit process" in err and f"pid {proc.pid}" in err
        assert snapshot(run) == before
    finally:
        release(proc)
    assert main(["evaluate", str(run), "--threads", "1"]) == 0  # free again
    capsys.readouterr()


def test_two_processes_creating_one_run_directory_only_one_wins(tmp_path):
    target = tmp_path / "shared"
    code = f"""
        import sys, time
        from metrickit import rundir
        try:
            run = rundir.RunDir.create({str(target)!r}, "recsys")
        except rundir.RunDirError as exc:
            print("refused", exc, flush=True)
        else:
            time.sleep(1.5)
            print("created", flush=True)
            run.close()
    """
    procs = [
        subprocess.Popen([*PYTHON, textwrap.dedent(code)], env=ENV, stdout=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]  # fmt: skip
    outcomes = sorted(p.communicate(timeout=120)[0].split()[0] for p in procs)
    assert outcomes == ["created", "refused"]


def test_recsys_refuses_a_directory_holding_another_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RECSYS, "-o", str(out)]) == 0
    capsys.readouterr()
    before = snapshot(out)
    err = error_of(capsys, [*RECSYS, "--loss", "bpr", "-o", str(out)])
    assert "holds another run" in err
    assert snapshot(out) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert "is not empty" in error_of(capsys, [*RECSYS, "-o", str(other)])
    assert (other / "notes.txt").read_text() == "mine"
    assert json.loads((out / rundir.MARKER).read_text())["kind"] == "recsys"
    err = error_of(capsys, ["evaluate", str(out)])
    assert "holds a recsys run; this command needs a train run" in err


def test_every_file_is_replaced_atomically(tmp_path, monkeypatch):
    from metrickit import plots, report

    report.write_report(tmp_path, title="t", config={}, metrics={}, images=[])
    plots.plot_curves({"a": [1.0, 2.0]}, tmp_path / "c.png")
    before = snapshot(tmp_path)

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(tmp_path, title="new", config={}, metrics={}, images=[])
    with pytest.raises(KeyboardInterrupt):
        plots.plot_curves({"b": [3.0, 1.0]}, tmp_path / "c.png")
    assert snapshot(tmp_path) == before  # old files intact, no temporary left behind


# ------------------------------------------------------------------- unwritable directories
@pytest.fixture
def read_only(monkeypatch):
    """Make directories read-only: chmod for a normal user; for root (who ignores modes), refuse
    every write below them at the level of os.open / os.mkdir / open."""
    roots: list[Path] = []

    def blocked(path) -> bool:
        try:
            p = Path(os.fsdecode(path)).absolute()
        except TypeError:
            return False
        return any(p == r or r in p.parents for r in roots)

    if os.geteuid() != 0:
        def make(path: Path) -> Path:
            roots.append(path)
            for d in [path, *(p for p in path.rglob("*") if p.is_dir())]:
                d.chmod(0o555)
            return path

        yield make
        for r in roots:
            for d in [r, *(p for p in r.rglob("*") if p.is_dir())]:
                d.chmod(0o755)
        return

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def os_open(path, flags, *args, **kwargs):
        if flags & writes and blocked(path):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if blocked(path):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and blocked(
            file
        ):
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)

    def make(path: Path) -> Path:
        roots.append(path.absolute())
        return path

    yield make


def test_unwritable_output_directory_fails_cleanly_for_train_and_recsys(
    tmp_path, capsys, read_only
):
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir()
    read_only(locked_dir)
    err = error_of(capsys, ["train", *FLAGS, "--epochs", "1", "-o", str(locked_dir / "run")])
    assert "cannot create output directory" in err and "Permission denied" in err
    err = error_of(capsys, [*RECSYS, "-o", str(locked_dir / "rec")])
    assert "cannot create output directory" in err
    assert list(locked_dir.iterdir()) == []
    err = error_of(capsys, ["train", *FLAGS, "--epochs", "1", "-o", str(locked_dir)])
    assert "cannot write to the run directory" in err and list(locked_dir.iterdir()) == []


def test_evaluate_of_a_read_only_run_fails_cleanly_and_changes_nothing(
    tmp_path, capsys, read_only
):
    run = fitted_run(tmp_path)
    before = snapshot(run)
    read_only(run)
    err = error_of(capsys, ["evaluate", str(run), "--threads", "1"])
    assert "cannot write to the run directory" in err
    assert snapshot(run) == before


def test_output_path_below_a_file_fails_cleanly(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = error_of(capsys, ["train", *FLAGS, "-o", str(tmp_path / "file" / "run")])
    assert "cannot create output directory" in err


# ------------------------------------------------------------------------ recsys faults
@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("recsys_csv")
    data = root / "events.csv"
    rows = ["user,item"] + [f"u{u},i{(u * 5 + j) % 25}" for u in range(10) for j in range(10)]
    data.write_text("\n".join(rows) + "\n")
    out = root / "run"
    argv = ["recsys", "train", "--dataset", str(data), "--user-col", "user", "--item-col", "item",
            "--n-test", "2", "--epochs", "1", "--dim", "4", "--quiet", "--threads", "1",
            "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out, data


def test_recsys_evaluate_refuses_truncated_and_malicious_models(csv_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(csv_run[0], run)
    capsys.readouterr()
    model = run / "model.pt"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    assert "model.pt" in error_of(capsys, ["recsys", "evaluate", str(run)])

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "metrickit-checkpoint-v1", "state_dict": Payload()}, model)
    err = error_of(capsys, ["recsys", "evaluate", str(run)])
    assert "cannot be loaded safely" in err and "pwned" not in err


def test_recsys_evaluate_refuses_data_with_ids_unknown_to_the_model(csv_run, tmp_path, capsys):
    import shutil

    run, data = tmp_path / "run", tmp_path / "events.csv"
    shutil.copytree(csv_run[0], run)
    config = json.loads((run / "config.json").read_text())
    rows = csv_run[1].read_text() + "".join(f"newcomer,i{j}\n" for j in range(6))
    data.write_text(rows)
    (run / "config.json").write_text(json.dumps({**config, "dataset": str(data)}))
    saved = torch.load(run / "model.pt", weights_only=True)
    torch.save({**saved, "config": {**saved["config"], "dataset": str(data)}}, run / "model.pt")
    capsys.readouterr()
    err = error_of(capsys, ["recsys", "evaluate", str(run)])
    assert "unknown to the model" in err and "'newcomer'" in err


# --------------------------------------------------------------------- config and data faults
def test_loss_params_that_are_not_a_mapping_fail_cleanly(tmp_path, capsys):
    for text in ("loss_params: [0.2]\n", "loss_params: margin=0.2\n"):
        config = tmp_path / "c.yaml"
        config.write_text(text)
        err = error_of(capsys, ["train", *FLAGS, "--config", str(config), "-o",
                                str(tmp_path / "run")])  # fmt: skip
        assert "loss_params must be a mapping" in err
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity"])
def test_non_finite_csv_values_are_named_before_anything_is_written(tmp_path, capsys, bad):
    lines = ["a,b,label"] + [f"{i},{i % 3},{i % 2}" for i in range(20)]
    lines[4] = f"1,{bad},0"
    data = tmp_path / "d.csv"
    data.write_text("\n".join(lines) + "\n")
    err = error_of(capsys, ["train", *FLAGS, "--dataset", str(data), "-P", "2", "-o",
                            str(tmp_path / "run")])  # fmt: skip
    assert "line 5: column 'b' is not a finite number" in err
    assert not (tmp_path / "run").exists()
