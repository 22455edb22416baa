"""The runbook names the tests that exercise each recipe: they must exist."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_runbook_references_real_tests():
    text = (ROOT / "docs" / "runbook.md").read_text()
    refs = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(refs) >= 8
    for path, name in refs:
        if name:
            assert f"def {name}(" in (ROOT / path).read_text(), f"{path}::{name} does not exist"
    # bare names after a path reference belong to the same file
    for name in re.findall(r"`(test_\w+)`", text):
        assert any(f"def {name}(" in (ROOT / p).read_text() for p, _ in refs), f"{name} does not exist"
