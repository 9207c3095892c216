"""Find reward plugins by one string, and call them with validated results.

A reward plugin is a plain function::

    def score(response: str, ground_truth: str, *, extra_info: dict) -> float | dict

A dict holds a float ``score`` plus named components (``{"score": 0.9, "math": 1.0, ...}``). verl's
``compute_score(data_source, solution_str, ground_truth, extra_info)`` and a plain ``(response, ground_truth)``
function are plugins too, called through :mod:`rewards.call_forms`.

One string names a reward everywhere (the ``reward`` column of a problem record, a recipe,
``--reward`` on the CLI, ``extra_info["reward"]`` for verl). :func:`get_reward` accepts:

1. a registered name: ``math`` (built-ins and functions decorated with :func:`register`);
2. an entry point name from the ``openvlt.rewards`` group of an installed package;
3. a file spec ``path/to/file.py:function`` or a module spec ``package.module:function``;
4. a weighted composition ``0.9*math+0.1*format`` (see :mod:`rewards.compose`).

:func:`check_reward` says whether a spec names a plugin without running the user's code in this
process: a plugin file that hangs or exits at import is tried in a child process, bounded by
``LOAD_LIMIT_S``. The trainer checks its rewards this way and scores in worker processes.

Everything here is cheap to import: the heavy math stack is loaded by the ``math`` plugin itself.
"""
from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from rewards.call_forms import as_plugin, settled

Reward = Callable[..., "float | dict[str, float]"]

ENTRY_POINT_GROUP = "openvlt.rewards"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
LOAD_LIMIT_S = 120.0  # loading one plugin (its imports: a tokenizer, a table); the scorer's workers have the same
_BUILTIN_MODULES = ("rewards.math_answer", "rewards.format", "rewards.iou")

_registry: dict[str, Reward] = {}
_loaded_specs: dict[tuple[str, float], Reward] = {}  # file/module/composition specs (and file mtime)
_checked_specs: set[tuple[str, float, int | None]] = set()  # loaded by a child process, under a memory limit
_lock = threading.RLock()


class RewardError(Exception):
    """A reward plugin failed, returned something that is not a score, or cannot be found."""


def register(name: str | None = None) -> Callable[[Reward], Reward]:
    """Register a reward plugin under ``name`` (default: the function's name).

    >>> @register("always_one")
    ... def always_one(response, ground_truth, *, extra_info):
    ...     return 1.0
    >>> get_reward("always_one")("x", "y", extra_info={})
    1.0
    """

    def decorator(fn: Reward) -> Reward:
        key = name or fn.__name__
        plugin = _plugin(key, fn)
        if not _built_in(fn):
            _load_builtins()  # a user's plugin named like a built-in not yet loaded is refused too
        with _lock:
            old = _registry.get(key)
            if old is not None and old is not fn and _origin(old) != _origin(fn):
                raise ValueError(
                    f"reward {key!r} is already registered by {_origin(old)}; not replacing it with {_origin(fn)}"
                )
            _registry[key] = plugin
            _loaded_specs.clear()  # compositions may name it
        return fn

    return decorator


def get_reward(spec: str) -> Reward:
    """Return the plugin that ``spec`` names (any of the four forms in the module docstring)."""
    spec = _spec_text(spec)
    fn = _registry.get(spec)
    if fn is not None:
        return fn
    key = (spec, _file_stamp(spec))
    fn = _loaded_specs.get(key)
    if fn is None:
        fn = _resolve(spec)
        with _lock:
            _loaded_specs[key] = fn
    return fn


def check_reward(spec: str, memory_mb: int | None = None) -> None:
    """Raise :class:`RewardError` unless ``spec`` names a plugin that loads, with a signature that fits.

    Unlike :func:`get_reward`, user code (a plugin file, a module, an entry point) is not run in this
    process but in a child process killed after ``LOAD_LIMIT_S``: a plugin whose import hangs, exits
    or crashes gives an error here instead of taking the caller (a training run) with it. With
    ``memory_mb``, the child loads it under the reward workers' memory limit: a plugin too big for
    them is refused here, not failed on every item.
    """
    from rewards.compose import parse_composition

    spec = _spec_text(spec)
    key = (spec, _file_stamp(spec))
    if spec in _registry or key in _loaded_specs or (*key, memory_mb) in _checked_specs:
        return
    terms = parse_composition(spec)
    if len(terms) > 1 or terms[0] != (1.0, spec):
        for _, part in terms:
            check_reward(part, memory_mb)
    elif ":" in spec or any(ep.name == spec for ep in _entry_points()):
        _load_in_child(spec, memory_mb)
        _checked_specs.add((*key, memory_mb))
    else:
        get_reward(spec)  # not a plugin anyone wrote: an unknown name, explained


_CHILD_MAIN = "from rewards.registry import _load_and_report; _load_and_report()"
_CHILD_MARK = "openvlt-reward-load-result:"


def _load_in_child(spec: str, memory_mb: int | None = None) -> None:
    """``get_reward(spec)`` in a fresh Python process with our ``sys.path``; its error, raised here."""
    with tempfile.TemporaryFile("w+") as job, tempfile.TemporaryFile("w+") as output:
        json.dump([sys.path, spec, memory_mb], job)
        job.seek(0)
        # Files, not pipes: a process the plugin starts at import may hold them open after the child ends.
        child = subprocess.Popen([sys.executable, "-c", _CHILD_MAIN], stdin=job, stdout=output, stderr=output,
                                 env=child_env(), start_new_session=True)
        try:
            child.wait(timeout=LOAD_LIMIT_S)
        except subprocess.TimeoutExpired:
            raise RewardError(f"loading reward {spec!r} took more than {LOAD_LIMIT_S:g} s (tried in a separate "
                              "process, which was killed): does the plugin wait for something when it is imported?"
                              ) from None
        finally:
            try:  # the child, and whatever the plugin started
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            child.wait()
        output.seek(0)
        lines = output.read().splitlines()
    results = [line[len(_CHILD_MARK):] for line in lines if line.startswith(_CHILD_MARK)]
    if not results:
        tail = " ".join(line.strip() for line in lines[-3:])
        raise RewardError(f"loading reward {spec!r} ended the process that loaded it (exit code {child.returncode})"
                          + (f": {tail}" if tail else ""))
    error = json.loads(results[-1])
    if error is not None:
        raise RewardError(error)


def import_from_working_directory() -> None:
    """Let a module spec (``my_rewards:exact``) name a module in the working directory, as ``python -m``
    would find it; worker processes get this ``sys.path``. For the command-line tools."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def child_env() -> dict[str, str]:
    """Our environment, with this package importable: for ``python -c`` processes that load plugins."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def _load_and_report() -> None:
    """The child process of :func:`_load_in_child`: load the spec, print the error (or null)."""
    from rewards import _worker

    _worker.die_with_owner(os.getppid())  # a caller stopped by SIGTERM (`ray job stop`) takes this process along
    path, spec, memory_mb = json.loads(sys.stdin.read())
    sys.path[:] = path
    try:
        if memory_mb:  # as a reward worker is when it loads the plugin: warmed up, then capped
            _worker.warm_up()
            _worker.cap_memory(memory_mb)
        get_reward(spec)
        error = None
    except RewardError as exc:
        error = str(exc)
    except BaseException as exc:  # noqa: BLE001  (a plugin's SystemExit too: it is reported, not obeyed)
        error = f"loading reward {spec!r} raised {type(exc).__name__}: {exc}"
    if memory_mb and error:
        error = _worker.memory_named(error)
    sys.stdout.write(f"\n{_CHILD_MARK}{json.dumps(error)}\n")
    sys.stdout.flush()


def _spec_text(spec: object) -> str:
    """The spec without surrounding space, with the built-ins registered (so their names resolve)."""
    if not isinstance(spec, str) or not spec.strip():
        raise RewardError(f"a reward is named by a non-empty string, got {spec!r}")
    _load_builtins()
    return spec.strip()


def list_rewards() -> dict[str, str]:
    """Registered and entry-point plugins: name -> first line of the docstring (or where it lives)."""
    _load_builtins()
    listed = {name: _summary(fn) for name, fn in sorted(_registry.items())}
    for ep in _entry_points():
        listed.setdefault(ep.name, _entry_point_summary(ep))
    return listed


def _entry_point_summary(ep: importlib.metadata.EntryPoint) -> str:
    """The first docstring line of the function an entry point names, read from its source without
    importing it (a plugin's import may load a model); else where it lives."""
    file = _module_file(ep.module)
    tree = None
    try:
        if file:
            with open(file, encoding="utf-8") as source:
                tree = ast.parse(source.read())
    except (OSError, SyntaxError, ValueError):
        pass
    functions = {node.name: node for node in getattr(tree, "body", ())
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    doc = ast.get_docstring(functions[ep.attr]) if ep.attr in functions else None
    return doc.splitlines()[0] if doc else f"entry point {ep.value}"


def import_hints(spec: str) -> tuple[str, ...]:
    """Modules a fresh process must import so that the registered names in ``spec`` resolve there."""
    from rewards.compose import split_terms

    modules = []
    for _, part in split_terms(spec):
        module = getattr(_registry.get(part), "__module__", None)
        if module == "__main__":  # a script: the worker loads its file (its main guard stays closed)
            script = getattr(sys.modules["__main__"], "__file__", None)
            if not script:
                raise RewardError(f"reward {part!r} was registered in an interactive session (a notebook, a REPL, "
                                  "python -c): worker processes cannot import it; score with workers=0, or register "
                                  "it in a module or a .py file and name that")
            module = os.path.abspath(script)
        if module and not module.startswith("rewards.") and module not in modules:
            modules.append(module)
    return tuple(modules)


def canonical_spec(spec: str, base: str | os.PathLike | None = None) -> str:
    """``spec`` with file paths made absolute, so it means the same in a process with another cwd.
    With ``base`` (a data file's folder), a relative file found there is taken from there."""
    from rewards.compose import join_terms, split_terms

    terms = split_terms(spec.strip())
    return join_terms([(w, _absolute_file_spec(part, base)) for w, part in terms])


def call_reward(spec: str, response: str, ground_truth: str, extra_info: Mapping[str, Any] | None,
                *, index: int | None = None, data_source: str = "") -> tuple[float, dict[str, float] | None]:
    """Run the plugin ``spec`` on one item; return ``(score, components)``. ``data_source`` (the item's, as
    verl passes a row's) goes to the plugins that take it: verl's form, and compositions for their parts.

    Raises :class:`RewardError` naming the plugin and the item when the plugin raises or returns
    something that is not a finite score. Never turns a failure into 0.
    """
    where = f"reward {spec!r} on item {index}" if index is not None else f"reward {spec!r}"
    fn = get_reward(spec)
    source = {"data_source": data_source} if getattr(fn, "wants_data_source", False) else {}
    try:
        out = settled(fn(response, ground_truth, extra_info=dict(extra_info or {}), **source))  # (awaited if async)
    except RewardError as exc:
        raise RewardError(f"{where}: {exc}") from exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the plugin's own failure (math-verify's timeout, a sys.exit(): reported, not obeyed)
        raise RewardError(f"{where} raised {type(exc).__name__}: {exc}{_raised_at(fn, exc)}") from exc
    return validate_output(out, where)


def _raised_at(fn: Reward, exc: BaseException) -> str:
    """" (mine.py line 12)": the line of a user's plugin that raised (its own file's last frame, else the last
    frame), so a worker's one-line error still says where to look; "" for the built-ins."""
    if _built_in(fn):
        return ""
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # (the first is call_reward's own)
    code = getattr(inspect.unwrap(fn), "__code__", None)  # (a verl-form function's, not its wrapper's)
    own = [f for f in frames if code is not None and f.filename == code.co_filename] or frames
    return f" ({os.path.basename(own[-1].filename)} line {own[-1].lineno})" if own else ""


def validate_output(out: object, where: str) -> tuple[float, dict[str, float] | None]:
    """Check a plugin's return value: a finite real, or a dict with a finite real ``score``. A dict's other
    numbers are components (finite too); its text, None and containers are notes, left out, as verl's
    reward functions return them (math_dapo's ``"pred": "42"``)."""
    if isinstance(out, Mapping):
        if "score" not in out:
            raise RewardError(f"{where} returned a dict without 'score': keys {sorted(map(str, out))}")
        components = {str(k): _finite(v, f"{where} component {k!r}") for k, v in out.items()
                      if k != "score" and not _note(v)}
        return _finite(out["score"], f"{where} score"), components
    return _finite(out, where), None


def _note(value: object) -> bool:
    return value is None or isinstance(value, (str, bytes, Mapping, list, tuple, set))


def _finite(value: object, where: str) -> float:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise RewardError(f"{where} returned {type(value).__name__} {value!r:.80}, not a number")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise RewardError(f"{where} returned {number}, not a finite number")
    return number


def _resolve(spec: str) -> Reward:
    from rewards.compose import parse_composition

    for ep in _entry_points():
        if ep.name == spec:
            return _checked(spec, ep.load())
    terms = parse_composition(spec)
    if len(terms) == 1 and terms[0][0] == 1.0 and terms[0][1] != spec:  # "1*math" is math
        return get_reward(terms[0][1])
    if len(terms) > 1 or terms[0][0] != 1.0:
        from rewards.compose import compose

        return compose({part: weight for weight, part in terms}, name=spec)
    if ":" in spec:
        return _load_object(spec)
    if spec.endswith(".py"):
        raise RewardError(f"reward {spec!r} names a file but no function in it: write {spec}:FUNCTION")
    close = difflib.get_close_matches(spec, list(list_rewards()), n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise RewardError(f"unknown reward {spec!r}{hint} (registered: {', '.join(list_rewards())})")


def load_module(where: str) -> Any:
    """Import ``package.module``, or execute ``path/to/file.py`` as a fresh module, for its plugins."""
    if not where.endswith(".py"):
        try:
            return importlib.import_module(where)
        except ImportError as exc:
            raise RewardError(f"cannot import module {where!r}: {exc}") from exc
    path = os.path.abspath(where)
    if not os.path.isfile(path):
        raise RewardError(f"reward file not found: {path}")
    name = f"openvlt_reward_{abs(hash(path))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # as `import` would: @dataclass, pickling and get_type_hints look the module up there
    try:
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        sys.modules.pop(name, None)
        raise RewardError(f"loading reward file {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _load_object(spec: str) -> Reward:
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise RewardError(f"reward spec {spec!r} is not 'path/to/file.py:function' or 'module:function'")
    module = load_module(where)
    if not hasattr(module, attr):
        raise RewardError(f"{where} has no function {attr!r} (reward {spec!r})")
    return _checked(spec, getattr(module, attr))


def _checked(spec: str, fn: object) -> Reward:
    try:
        return _plugin(spec, fn)
    except (TypeError, ValueError) as exc:
        raise RewardError(str(exc)) from exc


def _plugin(name: str, fn: object) -> Reward:
    """``fn`` as a plugin of openvlt's form (a verl-form or pair function wrapped), or why it cannot be one."""
    if not _NAME_RE.match(name) and ":" not in name:
        raise ValueError(f"reward name {name!r} must be letters, digits, '_', '.', '-' (no spaces, '+' or '*')")
    if not callable(fn):
        raise TypeError(f"reward {name!r} is {type(fn).__name__}, not a function")
    return as_plugin(name, fn)


def _load_builtins() -> None:
    if not _builtins_loaded.is_set():
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded.set()


_builtins_loaded = threading.Event()


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def plugin_files(spec: str, base: str | os.PathLike | None = None) -> list[str]:
    """The Python files a spec names (``path/file.py:function`` terms, in a composition too), absolute
    (a relative one found in ``base``, a data file's folder, is taken from there, as `canonical_spec`
    does), and a module spec's own file (``my_rewards:judge``) found on ``sys.path``: what to fingerprint to
    see that a plugin was edited, and an entry point's module file; for a module of an installed package,
    its distribution's METADATA too (an upgraded package changes its version there).
    Registered names and the built-in modules name no file.

    >>> plugin_files("0.9*math+0.1*/tmp/mine.py:score")
    ['/tmp/mine.py']
    """
    from rewards.compose import split_terms

    files = []
    for _, part in split_terms(spec.strip()):
        where = _absolute_file_spec(part, base).rpartition(":")[0]
        if where.endswith(".py"):
            files.append(where)
        elif where and part not in _registry:  # a module spec
            files += _code_of(where)
        elif not where and not (part in _registry and _built_in(_registry[part])):  # maybe an entry point
            files += [file for ep in _entry_points() if ep.name == part for file in _code_of(ep.module)]
    return list(dict.fromkeys(file for file in files if file))


def _code_of(module: str) -> list[str | None]:
    """A module's own file and its installed package's METADATA (either None when there is none)."""
    return [_module_file(module), _installed_metadata(module)]


_distributions = functools.cache(importlib.metadata.packages_distributions)  # (top-level name -> distributions: 80 ms)


def _installed_metadata(module: str) -> str | None:
    """The METADATA file (name and version) of the installed distribution a module comes from, if any: a
    scorer in an installed package (`verl.utils.reward_score:default_compute_score`) may call modules of it
    that are not its own file, and upgrading the package changes this file."""
    ours = set(_distributions().get("rewards", []))  # (openvlt's own: its built-in rewards are no input either)
    for name in [name for name in _distributions().get(module.split(".")[0], []) if name not in ours]:
        try:
            found = [f for f in importlib.metadata.distribution(name).files or () if f.name == "METADATA"]
        except importlib.metadata.PackageNotFoundError:
            continue
        if found:
            return os.path.abspath(str(found[0].locate()))
    return None


def _module_file(module: str) -> str | None:
    """The source file of ``module`` as an import would find it on ``sys.path``, found without importing
    anything (a package's ``__init__`` is the user's code); None for the built-in modules, or none found."""
    parts = module.split(".")
    if parts[0] == "rewards" or not all(p.isidentifier() for p in parts):
        return None
    folders = [os.path.join(entry or os.getcwd(), *parts) for entry in sys.path
               if isinstance(entry, str) and os.path.isdir(entry or ".")]
    for folder in folders + _found_by_finders(parts):
        for candidate in (folder + ".py", os.path.join(folder, "__init__.py")):
            if os.path.isfile(candidate):
                return os.path.abspath(candidate)
    return None


def _found_by_finders(parts: list[str]) -> list[str]:
    """Where a module lives that no sys.path entry holds (an editable install's finder hook puts the
    package there): found from the top package's spec, which imports nothing."""
    try:
        top = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return []
    if top is None:
        return []
    if top.submodule_search_locations:
        return [os.path.join(folder, *parts[1:]) for folder in top.submodule_search_locations]
    return [top.origin[: -len(".py")]] if len(parts) == 1 and top.origin and top.origin.endswith(".py") else []


def _absolute_file_spec(part: str, base: str | os.PathLike | None = None) -> str:
    where, sep, attr = part.rpartition(":")
    if sep and where.endswith(".py") and part not in _registry:
        beside = os.path.join(base, where) if base is not None and not os.path.isabs(where) else None
        return f"{os.path.abspath(beside if beside and os.path.isfile(beside) else where)}:{attr}"
    return part


def _file_stamp(spec: str) -> float:
    """Modification time of a file spec's file, so an edited plugin file is loaded again."""
    where = spec.rpartition(":")[0]
    try:
        return os.stat(where).st_mtime if where.endswith(".py") else 0.0
    except OSError:
        return 0.0


def _built_in(fn: object) -> bool:
    """Whether ``fn`` is one of this package's plugins (its verdicts are about the answer, not its code)."""
    return str(getattr(fn, "__module__", "")).startswith("rewards.")


def _origin(fn: object) -> str:
    """Where a function comes from: `module.name`, or `path/file.py:name` for a plugin file."""
    module = getattr(fn, "__module__", "?")
    file = getattr(sys.modules.get(module), "__file__", None) if str(module).startswith("openvlt_reward_") else None
    name = getattr(fn, "__qualname__", repr(fn))
    return f"{file}:{name}" if file else f"{module}.{name}"


def _summary(fn: object) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.splitlines()[0] if doc else _origin(fn)
