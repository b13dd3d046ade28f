"""One vocabulary of flags: the help of every sub-command spells the same idea the same way."""

import argparse

import pytest

from metrickit.cli import build_parser

# idea (argparse dest) -> the only option strings allowed for it, in every sub-command
CANONICAL = {
    "output": ["-o", "--output"],
    "dataset": ["--dataset"],
    "threads": ["--threads"],
    "device": ["--device"],
    "seed": ["--seed"],
    "quiet": ["--quiet"],
    "k": ["-K", "--k"],  # samples per class, nothing else
    "p": ["-P", "--p"],
    "top_k": ["-k", "--top-k"],  # a retrieval / ranking cut-off
}
OLD_SPELLINGS = {"--out", "--data", "--run"}


def subcommands(parser=None, prefix=()):
    """(name, parser) of every leaf sub-command."""
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*prefix, name))
            return
    yield " ".join(prefix), parser


COMMANDS = dict(subcommands())


def visible(parser):
    return [a for a in parser._actions if a.help is not argparse.SUPPRESS]


def test_every_command_is_checked():
    assert {"demo", "train", "evaluate", "recsys train", "recsys evaluate",
            "recsys recommend"} <= set(COMMANDS)  # fmt: skip


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_same_idea_same_flags(name):
    parser = COMMANDS[name]
    for action in visible(parser):
        if action.dest in CANONICAL and action.option_strings:
            assert action.option_strings == CANONICAL[action.dest], (name, action.option_strings)
        assert not set(action.option_strings) & OLD_SPELLINGS, (name, action.option_strings)
    dests = {a.dest for a in visible(parser)}
    assert "threads" in dests, f"{name} has no --threads"
    help_text = parser.format_help()
    assert "--threads" in help_text
    for old in OLD_SPELLINGS:
        assert f"{old} " not in help_text and f"{old}\n" not in help_text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_run_directory_is_always_the_positional_RUN_DIR(name):
    positionals = [a for a in COMMANDS[name]._actions if not a.option_strings and a.dest != "help"]
    for action in positionals:
        if action.dest == "run_dir":
            assert action.metavar in ("RUN_DIR", "INDEX_DIR")


def test_help_of_every_command_renders(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*name.split(), "--help"])
        assert exit_.value.code == 0
        assert "--threads" in capsys.readouterr().out


# --- one word for which triplets/pairs are selected: `mining` (losses, miners, config, CLI) ---
def test_train_spells_mining_as_the_losses_do():
    options = {s for a in visible(COMMANDS["train"]) for s in a.option_strings}
    assert "--mining" in options and "--miner" not in options


def test_old_miner_flag_still_works_with_a_warning(capsys):
    from metrickit.cli.train import flag_overrides

    args = build_parser().parse_args(["train", "--miner", "semihard"])
    assert flag_overrides(args)["mining"] == "semihard"
    assert "--miner is deprecated; use --mining" in capsys.readouterr().err


def test_old_miner_and_strategy_arguments_still_work_with_a_warning():
    import torch

    from metrickit import miners
    from metrickit.training import TrainConfig

    with pytest.warns(DeprecationWarning, match="miner= is deprecated, use mining="):
        cfg = TrainConfig(miner="hard", output=None)
    assert cfg.mining == "hard" and "miner" not in cfg.to_dict()
    with pytest.warns(DeprecationWarning, match="TrainConfig.miner is deprecated"):
        assert cfg.miner == "hard"
    with pytest.warns(DeprecationWarning, match="miner= is deprecated"):
        assert TrainConfig.from_dict({"miner": "semihard", "output": None}).mining == "semihard"
    # a run directory's config.json from before the rename ("miner": null) loads silently
    assert TrainConfig.from_dict({"miner": None, "output": None}).mining is None
    x, y = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), torch.arange(12) % 3
    for fn in (miners.mine_offline, miners.select_triplets):
        with pytest.warns(DeprecationWarning, match="strategy= is deprecated, use mining="):
            old = fn(x, y, strategy="hard")
        assert all(torch.equal(a, b) for a, b in zip(old, fn(x, y, mining="hard"), strict=True))


def test_no_public_signature_names_mining_otherwise():
    import inspect

    from metrickit import losses, miners
    from metrickit.training import TrainConfig, config

    callables = [getattr(m, n) for m in (miners, losses) for n in dir(m) if not n.startswith("_")]
    for fn in [*filter(callable, callables), TrainConfig]:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.name in ("miner", "strategy"):  # only the deprecated spellings, never required
                assert p.default is None, (fn, p.name)
    assert "mining" in config.field_names() and "miner" not in config.field_names()
