"""The ways a reward function may be written, each turned into openvlt's one calling form.

A reward function you already have works as a plugin as it is:

    openvlt's:   score(response, ground_truth, *, extra_info)            (may take `data_source` too)
    verl's:      compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)
                 (a ``custom_reward_function``, or verl's own ``verl.utils.reward_score:default_compute_score``,
                 which picks a scorer by the row's ``data_source``): called by keyword, as verl calls it
    a pair:      compute_score(solution_str, ground_truth)
                 (verl's per-data-set scorers, ``verl.utils.reward_score.gsm8k:compute_score``)

:func:`as_plugin` returns a function of openvlt's form for each, so the registry, the scorer and the
compositions call one form. Only verl's form, and an openvlt-form function that names a ``data_source``
parameter, get the item's data source: their wrapper says so (``wants_data_source``) and
:func:`rewards.registry.call_reward` passes it to those only. A verl-form or pair function's tuple result
is its first element, as verl's ``default_compute_score`` reads ``prime_math``'s ``(correct, format, answer)``.
An ``async def`` reward (verl's reward loop awaits those) is awaited on one event loop per process, kept
in a thread of its own: a client the plugin keeps between items stays on its loop, and a caller already
inside an event loop (a notebook) can still score.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

FORMS = ("(response, ground_truth, *, extra_info) [openvlt's], (data_source, solution_str, ground_truth, "
         "extra_info) [verl's custom_reward_function, called by keyword] or (response, ground_truth)")
_VERL_KEYWORDS = {"data_source": "", "solution_str": "", "ground_truth": "", "extra_info": {}}
_SERVED_MODEL_KEYWORDS = ("reward_router_address", "reward_model_tokenizer")


def as_plugin(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` callable as ``fn(response, ground_truth, extra_info=...)``; TypeError naming the forms if it fits none."""
    if getattr(fn, "_openvlt_form", False):  # wrapped already (a plugin registered again under another name)
        return fn
    try:
        signature = inspect.signature(fn)
    except ValueError:  # a builtin without a signature: trust it
        return fn
    names = signature.parameters
    if ("solution_str" in names or "data_source" in names) and _binds(signature, **_VERL_KEYWORDS):
        return _adapted(fn, _verl_call(fn), wants_data_source=True)
    if "data_source" in names and _binds(signature, "response", "ground truth", extra_info={}, data_source=""):
        return _adapted(fn, lambda response, ground_truth, extra_info, data_source:
                        fn(response, ground_truth, extra_info=extra_info, data_source=data_source),
                        wants_data_source=True, first_of_tuple=False)  # (with or without a default)
    if _binds(signature, "response", "ground truth", extra_info={}):
        if not _is_async(fn):
            return fn
        return _adapted(fn, lambda response, ground_truth, extra_info, data_source:
                        fn(response, ground_truth, extra_info=extra_info), first_of_tuple=False)
    if _binds(signature, **_VERL_KEYWORDS):  # `**kwargs` alone: verl can call it, so can we
        return _adapted(fn, _verl_call(fn), wants_data_source=True)
    if _binds(signature, "response", "ground truth"):
        return _adapted(fn, lambda response, ground_truth, extra_info, data_source: fn(response, ground_truth))
    label = getattr(fn, "__name__", type(fn).__name__)
    served = [p for p in _SERVED_MODEL_KEYWORDS if p in names and names[p].default is inspect.Parameter.empty]
    if served:  # verl's reward loop passes these only when it serves a reward model (reward_model.enable)
        others = [p for p, v in names.items() if v.default is inspect.Parameter.empty and v.kind in (
            v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY) and p not in (*_VERL_KEYWORDS, *_SERVED_MODEL_KEYWORDS)]
        fix = (f"it also needs {', '.join(others)}, which no form gives" if others else
               "give those parameters a default (None) if it can score without one")
        raise TypeError(f"reward {name!r} ({label}{signature}) needs {' and '.join(served)}: it scores with a reward "
                        "model that verl's reward loop serves, and openvlt serves none (its rewards are functions of "
                        f"the response); {fix}, or judge with a rule-based reward")
    raise TypeError(f"reward {name!r} must accept {FORMS}; its signature is {label}{signature}")


def settled(out: Any) -> Any:
    """A reward's result, awaited if it is awaitable (an ``async def`` plugin's coroutine)."""
    if not inspect.isawaitable(out):
        return out
    return asyncio.run_coroutine_threadsafe(_awaited(out), _event_loop()).result()


def _verl_call(fn: Callable[..., Any]) -> Callable[[str, str, dict, str], Any]:
    return lambda response, ground_truth, extra_info, data_source: fn(
        data_source=data_source, solution_str=response, ground_truth=ground_truth, extra_info=extra_info)


def _adapted(fn: Callable[..., Any], call: Callable[[str, str, dict, str], Any], *, wants_data_source: bool = False,
             first_of_tuple: bool = True) -> Callable[..., Any]:
    """openvlt's form around ``call``; named, documented and located as ``fn`` (``rewards list``, errors)."""

    def plugin(response: str, ground_truth: str, *, extra_info: dict, data_source: str = "") -> Any:
        out = settled(call(response, ground_truth, extra_info, data_source))
        return out[0] if first_of_tuple and isinstance(out, (tuple, list)) and out else out

    functools.update_wrapper(plugin, fn)  # (and `__wrapped__`: errors name its own file and line)
    plugin._openvlt_form = True  # type: ignore[attr-defined]
    plugin.wants_data_source = wants_data_source  # type: ignore[attr-defined]
    return plugin


def _binds(signature: inspect.Signature, *args: Any, **kwargs: Any) -> bool:
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    """This process's loop for async rewards, running in a daemon thread (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="openvlt-async-rewards", daemon=True).start()
        return _loop
