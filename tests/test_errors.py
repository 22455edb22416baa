"""The exit-code table lives in one place: dbkit.errors.  Every error of a feature derives from the
class whose exit code it means and sets none itself."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import dbkit
from dbkit import errors

pytestmark = pytest.mark.unit

BASES = {errors.DbkitError: 1, errors.OperationFailed: 1, errors.ConfigError: 2, errors.UsageError: 2,
         errors.DatabaseUnavailable: 3, errors.MissingDependency: 4, errors.Refused: 5, errors.DevClusterError: 1}


def all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)


def test_only_the_base_classes_set_an_exit_code():
    for info in pkgutil.walk_packages(dbkit.__path__, "dbkit."):
        if not info.name.startswith("dbkit.testing"):
            importlib.import_module(info.name)
    leaves = [c for c in all_subclasses(errors.DbkitError) if c not in BASES]
    assert leaves, "no feature errors found: the walk imported nothing"
    for cls in leaves:
        assert "exit_code" not in vars(cls), f"{cls.__module__}.{cls.__name__} sets its own exit code"
        assert cls.exit_code in (1, 2, 3, 4, 5)
        assert cls.__bases__[0] is not errors.DbkitError, \
            f"{cls.__module__}.{cls.__name__} should derive from the class of its exit code, not DbkitError"
    for cls, code in BASES.items():
        assert cls.exit_code == code
