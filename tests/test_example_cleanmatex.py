"""Issue 14's "Done means" for examples/cleanmatex: the whole lifecycle with the real CLI."""

import pytest
from example_harness import example_env  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration


def test_cleanmatex_end_to_end(example_env):  # noqa: F811
    app = example_env("cleanmatex")
    app.lifecycle()
