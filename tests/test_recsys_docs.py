"""docs/recsys.md's Python examples run as written."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "recsys.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_recsys_doc_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_recsys_doc_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"docs/recsys.md[python block {index}]", "exec"), {})
    if "ds.dropped" in BLOCKS[index]:
        assert "{'test': {'unknown user id': 1, 'unknown item id': 1}}" in capsys.readouterr().out
