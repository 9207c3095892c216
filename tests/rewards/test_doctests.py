"""The examples in the package's docstrings are tests too."""
import doctest
import importlib
import inspect
import pkgutil

import pytest

import rewards

MODULES = sorted(m.name for m in pkgutil.walk_packages(rewards.__path__, "rewards."))
WITH_EXAMPLES = [name for name in MODULES if ">>>" in inspect.getsource(importlib.import_module(name))]


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_builtin_reward_has_an_example():
    for name in ("math", "format", "iou"):
        assert ">>>" in rewards.get_reward(name).__doc__
