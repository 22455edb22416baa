"""dbkit._render.show: the one place a command's result becomes JSON or lines and tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from dbkit import _render as render

pytestmark = pytest.mark.unit


@dataclass
class Plain:
    name: str
    tags: list[str] = field(default_factory=list)


@dataclass
class Typed:
    n: int

    def as_dict(self):
        return {"n": self.n, "double": 2 * self.n}


class Manifestish:
    def to_dict(self):
        return {"id": "x"}


def test_jsonable_uses_the_results_own_form():
    assert render.jsonable(Typed(2)) == {"n": 2, "double": 4}
    assert render.jsonable(Manifestish()) == {"id": "x"}
    assert render.jsonable(Plain("a", ["t"])) == {"name": "a", "tags": ["t"]}
    assert render.jsonable([Typed(1), Plain("b")]) == [{"n": 1, "double": 2}, {"name": "b", "tags": []}]
    assert render.jsonable({"already": "a dict"}) == {"already": "a dict"}


def test_show_prints_json_or_the_described_blocks(capsys):
    def describe(result):
        yield f"n is {result.n}"
        yield render.Table(["col", "value"], [("a", 1), ("longer", None)], title="numbers")
        yield ""
        yield "done"

    render.show(Typed(3), describe, as_json=True)
    assert json.loads(capsys.readouterr().out) == {"n": 3, "double": 6}
    render.show(Typed(3), describe, as_json=True, json_data={"other": 1})
    assert json.loads(capsys.readouterr().out) == {"other": 1}
    render.show(Typed(3), describe)  # not a TTY under pytest: plain aligned lines
    assert capsys.readouterr().out == "n is 3\nnumbers\ncol     value\na       1\nlonger\n\ndone\n"
