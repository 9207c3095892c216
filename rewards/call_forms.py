"""The ways a reward function may be written, each turned into openvlt's one calling form.

A reward function you already have works as a plugin as it is:

    openvlt's:   score(response, ground_truth, *, extra_info)
    verl's:      compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)
                 (a ``custom_reward_function``, or verl's own ``verl.utils.reward_score:default_compute_score``,
                 which picks a scorer by the row's ``data_source``)
    a pair:      compute_score(solution_str, ground_truth)
                 (verl's per-data-set scorers, ``verl.utils.reward_score.gsm8k:compute_score``)

:func:`as_plugin` returns a function of openvlt's form for each, so the registry, the scorer and the
compositions call one form. verl's form needs the row's data source, which openvlt's form has no place for:
its wrapper takes it as a keyword and says so (``wants_data_source``), and :func:`rewards.registry.call_reward`
passes the item's ``data_source`` to such functions only. An ``async def`` function (verl's reward loop awaits
those) is run to completion.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

FORMS = ("(response, ground_truth, *, extra_info) [openvlt's], (data_source, solution_str, ground_truth, "
         "extra_info) [verl's custom_reward_function] or (response, ground_truth)")
_VERL_KEYWORDS = {"data_source": "", "solution_str": "", "ground_truth": "", "extra_info": {}}


def as_plugin(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` callable as ``fn(response, ground_truth, extra_info=...)``; TypeError naming the forms if it fits none."""
    try:
        signature = inspect.signature(fn)
    except ValueError:  # a builtin without a signature: trust it
        return fn
    if _binds(signature, "response", "ground truth", extra_info={}):
        if not _is_async(fn):
            return fn
        return _adapted(fn, lambda response, ground_truth, extra_info, data_source:
                        fn(response, ground_truth, extra_info=extra_info))
    if "solution_str" in signature.parameters and _binds(signature, **_VERL_KEYWORDS):
        wrapper = _adapted(fn, lambda response, ground_truth, extra_info, data_source:
                           fn(data_source=data_source, solution_str=response, ground_truth=ground_truth,
                              extra_info=extra_info))
        wrapper.wants_data_source = True  # type: ignore[attr-defined]
        return wrapper
    if _binds(signature, "response", "ground truth"):
        return _adapted(fn, lambda response, ground_truth, extra_info, data_source: fn(response, ground_truth))
    raise TypeError(f"reward {name!r} must accept {FORMS}; its signature is {fn.__name__}{signature}")


def _adapted(fn: Callable[..., Any], call: Callable[[str, str, dict, str], Any]) -> Callable[..., Any]:
    """openvlt's form around ``call``; named, documented and located as ``fn`` (``rewards list``, errors)."""

    @functools.wraps(fn)
    def plugin(response: str, ground_truth: str, *, extra_info: dict, data_source: str = "") -> Any:
        out = call(response, ground_truth, extra_info, data_source)
        return asyncio.run(out) if inspect.iscoroutine(out) else out

    return plugin


def _binds(signature: inspect.Signature, *args: Any, **kwargs: Any) -> bool:
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
