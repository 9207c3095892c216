"""The examples in the package's docstrings are tests too."""
import doctest
import importlib
import pkgutil

import pytest

import rewards

MODULES = sorted(m.name for m in pkgutil.walk_packages(rewards.__path__, "rewards."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_every_builtin_reward_has_an_example():
    for name in ("math", "format", "iou"):
        assert ">>>" in rewards.get_reward(name).__doc__
