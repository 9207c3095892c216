"""Finding plugins by one string, and holding them to the contract."""
import asyncio
import os
import re
import sys
import textwrap
import time

import numpy as np
import pytest

import rewards.registry
from rewards import call_reward, check_reward, get_reward, list_rewards, register
from rewards.registry import RewardError, canonical_spec, import_hints
from tests.conftest import plugin_file


def test_builtins_are_listed_with_their_docstrings():
    listed = list_rewards()
    assert {"math", "format", "iou"} <= set(listed)
    assert listed["format"].startswith("1.0 for")


def test_register_by_decorator_and_look_up():
    @register("test_constant_half")
    def half(response, ground_truth, *, extra_info):
        """Always 0.5."""
        return 0.5

    assert get_reward("test_constant_half") is half
    assert list_rewards()["test_constant_half"] == "Always 0.5."
    assert call_reward("test_constant_half", "r", "g", {}) == (0.5, None)


def test_register_refuses_a_different_function_under_a_taken_name(tmp_path):
    with pytest.raises(ValueError, match="already registered"):
        @register("math")
        def other(response, ground_truth, *, extra_info):
            return 0.0
    plugin = tmp_path / "mine.py"  # a plugin file that registers a built-in's name: the message names the file
    plugin.write_text("from rewards import register\n\n@register('math')\n"
                      "def score(response, ground_truth, *, extra_info):\n    return 1.0\n")
    with pytest.raises(RewardError, match=rf"reward 'math' is already registered by rewards.math_answer.math_reward; "
                                          rf"not replacing it with {plugin}:score"):
        get_reward(f"{plugin}:score")


@pytest.mark.parametrize("name", ["has space", "a+b", "2*x", ""])
def test_register_refuses_names_that_clash_with_composition_syntax(name):
    with pytest.raises(ValueError):
        register(name)(lambda response, ground_truth, *, extra_info: 0.0)


def test_register_checks_the_signature():
    with pytest.raises(TypeError, match=r"must accept \(response, ground_truth, \*, extra_info\) \[openvlt's\], "
                                        r"\(data_source, solution_str, ground_truth, extra_info\) \[verl's .*; "
                                        r"its signature is wrong\(response\)"):
        @register("test_wrong_signature")
        def wrong(response):
            return 0.0
    with pytest.raises(RewardError, match="must accept"):  # verl's names, but no extra_info: verl could not call it either
        get_reward_from_source("def compute_score(data_source, solution_str, ground_truth):\n    return 1.0\n")


def get_reward_from_source(source: str, name: str = "compute_score"):
    """The plugin a fresh file holding `source` names (each call its own file: loaded anew)."""
    import tempfile

    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "verl_style.py"), "w") as f:
        f.write(source)
    return get_reward(f"{folder}/verl_style.py:{name}")


VERL_FORM = """
calls = []

def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    \"\"\"verl's custom_reward_function form.\"\"\"
    calls.append((data_source, solution_str, ground_truth, extra_info, kwargs))
    if data_source == "broken":
        raise KeyError(data_source)
    return {"score": float(solution_str == ground_truth), "pred": solution_str, "source_seen": float(data_source == "geo")}
"""


def test_a_verl_reward_function_is_a_plugin_as_it_is_and_gets_the_items_data_source():
    """verl calls compute_score(data_source=, solution_str=, ground_truth=, extra_info=): a user's verl
    reward file works unchanged, with the row's data source (which openvlt's own form has no place for)."""
    fn = get_reward_from_source(VERL_FORM)
    module = sys.modules[fn.__module__]
    assert fn.__doc__ == "verl's custom_reward_function form." and fn.__name__ == "compute_score"
    assert call_reward(f"{module.__file__}:compute_score", "3", "3", {"choices": ["3"]}, data_source="geo") \
        == (1.0, {"source_seen": 1.0})
    assert module.calls == [("geo", "3", "3", {"choices": ["3"]}, {})]
    with pytest.raises(RewardError, match=r"raised KeyError: 'broken' \(verl_style.py line 8\)$"):  # its own line
        call_reward(f"{module.__file__}:compute_score", "3", "3", {}, data_source="broken")


def test_a_verl_reward_function_scores_in_workers_and_compositions_with_each_items_data_source():
    from rewards import score_batch

    folder = get_reward_from_source(VERL_FORM).__module__  # (loaded here only to have a file)
    path = sys.modules[folder].__file__
    items = [{"response": "3", "ground_truth": "3", "data_source": "geo"},
             {"response": "4", "ground_truth": "3", "data_source": "other"},
             {"response": "3", "ground_truth": "3"},
             {"response": "3", "ground_truth": "3", "data_source": "broken"},
             {"response": "3", "ground_truth": "3", "data_source": 7}]
    results = score_batch(items, reward=f"{path}:compute_score", workers=1, timeout=10)
    assert [(r.status, r.score, r.components) for r in results[:3]] == [
        ("ok", 1.0, {"source_seen": 1.0}), ("ok", 0.0, {"source_seen": 0.0}), ("ok", 1.0, {"source_seen": 0.0})]
    assert "raised KeyError" in results[3].error and "'data_source' must be a string, got int" in results[4].error
    composed = score_batch(items[:2], reward=f"0.5*{path}:compute_score+0.5*format", workers=0)
    assert [r.components[f"{path}:compute_score.source_seen"] for r in composed] == [1.0, 0.0]


def test_verls_own_scorers_are_plugins_by_their_module_names():
    """verl's default_compute_score picks gsm8k's scorer by the data source; gsm8k's own compute_score is a
    (response, ground_truth) pair, called without extra_info."""
    from rewards import score_batch

    items = [{"response": "so #### 72", "ground_truth": "72", "data_source": "openai/gsm8k"},
             {"response": "so #### 71", "ground_truth": "72", "data_source": "openai/gsm8k"}]
    for spec in ("verl.utils.reward_score:default_compute_score", "verl.utils.reward_score.gsm8k:compute_score"):
        assert [r.score for r in score_batch(items, reward=spec, workers=1, timeout=30)] == [1.0, 0.0], spec
    unknown = score_batch([{**items[0], "data_source": "nobody/knows"}],
                          reward="verl.utils.reward_score:default_compute_score", workers=1, timeout=30)[0]
    assert "raised NotImplementedError: Reward function is not implemented for data_source='nobody/knows'" in unknown.error


@pytest.mark.parametrize("signature, call", [
    ("data_source, solution_str, ground_truth=None, extra_info=None", "data_source, solution_str, ground_truth"),
    ("data_source=None, solution_str=None, ground_truth=None, extra_info=None", "data_source, solution_str, ground_truth"),
    ("**kwargs", "kwargs['data_source'], kwargs['solution_str'], kwargs['ground_truth']"),
    ("solution_str, ground_truth, **kwargs", "kwargs['data_source'], solution_str, ground_truth"),
    ("response, ground_truth, *, extra_info, data_source=''", "data_source, response, ground_truth"),
    ("response, ground_truth, *, extra_info, data_source", "data_source, response, ground_truth"),  # no default
    ("response, ground_truth, data_source, *, extra_info", "data_source, response, ground_truth"),
])
def test_every_signature_verl_can_call_gets_its_arguments_by_name(signature, call):
    """verl calls by keyword: a function it can call is called the same way here, never with the answer in
    `data_source` because its parameters have defaults (positionally, openvlt's form would fit it too)."""
    fn = get_reward_from_source(f"def compute_score({signature}):\n    return {{'score': 1.0, 'seen': ({call})}}\n")
    assert call_reward_with(fn, "the answer", "3", data_source="geo")["seen"] == ("geo", "the answer", "3")


def call_reward_with(fn, response, ground_truth, data_source):
    """What the plugin returned, its notes too (call_reward keeps numbers only)."""
    return fn(response, ground_truth, extra_info={}, data_source=data_source) if getattr(fn, "wants_data_source", False) \
        else fn(response, ground_truth, extra_info={})


def test_a_scorer_in_an_installed_package_is_fingerprinted_with_the_packages_version():
    """default_compute_score calls math_dapo, gsm8k, ... modules of verl that are not its own file: an upgraded
    verl is a changed reward, seen in the distribution's METADATA (its name holds the version)."""
    import importlib.metadata

    files = rewards.registry.plugin_files("verl.utils.reward_score:default_compute_score")
    assert files[0].endswith("verl/utils/reward_score/__init__.py")
    assert files[1].endswith(f"verl-{importlib.metadata.version('verl')}.dist-info/METADATA")
    ours = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(rewards.__file__))), "data_tools", "toyworld", "reward.py")
    assert rewards.registry.plugin_files("toyworld") == [ours]  # (openvlt's own package: not its version)


def test_a_pair_functions_tuple_is_its_first_element_and_a_plugin_registered_again_is_not_wrapped_twice():
    """verl's default_compute_score reads prime_math's (correct, format, answer) as its first element."""
    fn = get_reward_from_source("def compute_score(solution_str, ground_truth):\n"
                                "    return (solution_str == ground_truth, True, solution_str)\n")
    path = sys.modules[fn.__module__].__file__
    assert call_reward(f"{path}:compute_score", "3", "3", {}) == (1.0, None)
    assert call_reward(f"{path}:compute_score", "4", "3", {}) == (0.0, None)
    register("test_verl_alias")(get_reward("verl.utils.reward_score.gsm8k:compute_score"))
    assert call_reward("test_verl_alias", "#### 7", "7", {}) == (1.0, None)


def test_a_callable_fitting_no_form_is_refused_by_name_whatever_it_is():
    import functools

    class Judge:
        def __call__(self, response):
            return 1.0

    for fn, label in ((Judge(), "Judge(response)"), (functools.partial(lambda a, b, c, d: 1.0, 1, 2, 3), "partial(d)")):
        with pytest.raises(TypeError, match=rf"must accept .*; its signature is {re.escape(label)}"):
            register("test_refused_callable")(fn)


def test_a_verl_reward_for_a_served_reward_model_is_refused_naming_what_it_needs():
    """verl's reward loop hands a generative reward model's address to a compute_score that asks for it;
    openvlt serves no reward model, and says so instead of listing the call forms. With defaults the
    function is verl's form (it may score without the model)."""
    source = ("async def compute_score(data_source, solution_str, ground_truth, extra_info, reward_router_address, "
              "reward_model_tokenizer{}):\n    return float(reward_router_address is None and solution_str == ground_truth)\n")
    with pytest.raises(RewardError, match=r"needs reward_router_address and reward_model_tokenizer: it scores with a "
                                          r"reward model that verl's reward loop serves, and openvlt serves none"):
        get_reward_from_source(source.format(""))
    with pytest.raises(RewardError, match=r"needs reward_router_address: .*give those parameters a default"):
        get_reward_from_source(source.format("=None"))
    with pytest.raises(RewardError, match=r"needs reward_router_address: .*; it also needs judge_url, which no form gives"):
        get_reward_from_source(source.format("=None").replace("extra_info,", "extra_info, judge_url,"))
    fn = get_reward_from_source(source.format("=None").replace("reward_router_address,", "reward_router_address=None,"))
    path = sys.modules[fn.__module__].__file__
    assert call_reward(f"{path}:compute_score", "3", "3", {}) == (1.0, None)


ASYNC_JUDGE = """
import asyncio

_loop = None  # what a kept client (httpx.AsyncClient) is bound to: the loop of its first request


async def score(response, ground_truth, *, extra_info):
    global _loop
    _loop = _loop or asyncio.get_running_loop()
    if asyncio.get_running_loop() is not _loop:
        raise RuntimeError("Event loop is closed")
    await asyncio.sleep(0)
    return float(response == ground_truth)


async def compute_score(data_source, solution_str, ground_truth, extra_info):
    return float(data_source == "geo")
"""


def test_an_async_reward_is_awaited_on_one_loop_in_workers_and_inside_a_running_event_loop():
    """A kept client stays on its loop from item to item, and a caller inside an event loop (a notebook,
    `workers=0`) can still score an async reward."""
    from rewards import score_batch

    fn = get_reward_from_source(ASYNC_JUDGE, name="score")
    path = sys.modules[fn.__module__].__file__
    assert [fn(r, "3", extra_info={}) for r in ("3", "4", "3")] == [1.0, 0.0, 1.0]
    items = [{"response": r, "ground_truth": "3", "data_source": "geo"} for r in ("3", "4", "3")]
    assert [r.score for r in score_batch(items, reward=f"{path}:score", workers=1, timeout=10)] == [1.0, 0.0, 1.0]

    async def in_a_notebook():
        return [r.score for r in score_batch(items, reward=f"{path}:score", workers=0)], \
            call_reward(f"{path}:compute_score", "3", "3", {}, data_source="geo")

    assert asyncio.run(in_a_notebook()) == ([1.0, 0.0, 1.0], (1.0, None))


def test_file_spec(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(textwrap.dedent('''
        def exact(response, ground_truth, *, extra_info):
            """1.0 when the response is the ground truth."""
            return float(response == ground_truth)
    '''))
    fn = get_reward(f"{plugin}:exact")
    assert fn("a", "a", extra_info={}) == 1.0
    assert get_reward(f"{plugin}:exact") is fn  # loaded once
    plugin.write_text(plugin.read_text().replace("float(response == ground_truth)", "0.25"))
    import os
    os.utime(plugin, (1, 2_000_000_000))
    assert get_reward(f"{plugin}:exact")("a", "a", extra_info={}) == 0.25  # an edited file is reloaded


def test_relative_file_specs_are_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "p.py").write_text("def f(response, ground_truth, *, extra_info):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    assert canonical_spec("0.5*p.py:f+0.5*math") == f"0.5*{tmp_path}/p.py:f+0.5*math"


def test_module_spec():
    assert get_reward("rewards.format:format_reward")("<think>a</think><answer>b</answer>", "", extra_info={}) == 1.0


def test_entry_point_group(tmp_path, monkeypatch):
    (tmp_path / "ep_plugin_mod.py").write_text(
        "def scorer(response, ground_truth, *, extra_info):\n    \"\"\"Three quarters, always.\"\"\"\n    return 0.75\n")
    dist = tmp_path / "ep_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[openvlt.rewards]\nep_test_reward = ep_plugin_mod:scorer\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert list_rewards()["ep_test_reward"] == "Three quarters, always."  # read from the source: nothing imported
    assert "ep_plugin_mod" not in sys.modules
    assert get_reward("ep_test_reward")("r", "g", extra_info={}) == 0.75
    assert get_reward("0.5*ep_test_reward+0.5*math")("r", "g", extra_info={})["score"] == 0.375
    check_reward("ep_test_reward")  # loaded in a child process, which sees our sys.path
    from rewards.registry import plugin_files

    assert plugin_files("0.5*ep_test_reward+0.5*math") == [str(tmp_path / "ep_plugin_mod.py")]  # its code is an input too
    (dist / "entry_points.txt").write_text("[openvlt.rewards]\nep_test_broken = ep_plugin_mod:no_such\n")
    with pytest.raises(RewardError, match="no_such"):
        check_reward("ep_test_broken")


@pytest.mark.parametrize("spec,message", [
    ("mathh", "did you mean 'math'"),
    ("nowhere.py:f", "not found"),
    ("rewards.format:no_such_function", "has no function"),
    ("no_such_module_xyz:f", "cannot import"),
    ("", "non-empty"),
])
@pytest.mark.parametrize("load", [get_reward, check_reward])
def test_unknown_rewards_are_explained(spec, message, load):
    with pytest.raises(RewardError, match=message):
        load(spec)


@pytest.mark.parametrize("response,message", [
    ("string", "returned str '1.0', not a number"),
    ("nan", "returned nan, not a finite number"),
    ("inf", "not a finite number"),
    ("dict", "without 'score'"),
    ("none", "returned NoneType"),
    ("dict_nan", "score returned nan"),
    ("part_nan", "component 'acc' returned nan"),
])
def test_bad_return_values_are_errors_naming_plugin_and_item(response, message):
    from tests.rewards import reward_plugins_for_tests  # noqa: F401  (registers test_bad_return)

    with pytest.raises(RewardError, match=message) as info:
        call_reward("test_bad_return", response, "", {}, index=12)
    assert "reward 'test_bad_return' on item 12" in str(info.value)


def test_a_dicts_text_and_containers_are_notes_left_out_as_verl_reward_functions_return_them():
    """verl's math_dapo returns {"score", "acc", "pred": "42"}: its numbers are components, the text a note."""
    from tests.rewards import reward_plugins_for_tests  # noqa: F401

    def dapo_like(response, ground_truth, *, extra_info):
        return {"score": -1.0, "acc": False, "pred": "41", "steps": ["a", "b"], "extra": None, "detail": {"why": "wrong"}}

    register("test_dapo_like")(dapo_like)
    assert call_reward("test_dapo_like", "x", "42", {}) == (-1.0, {"acc": 0.0})
    with pytest.raises(RewardError, match=r"test_bad_return' score returned str '1.0', not a number"):
        call_reward("test_bad_return", "string_score", "", {})


def test_a_raising_plugin_is_an_error_naming_plugin_and_item():
    from tests.rewards import reward_plugins_for_tests  # noqa: F401

    with pytest.raises(RewardError, match=r"reward 'test_misbehave' on item 3 raised ValueError: the plugin failed"):
        call_reward("test_misbehave", "raise", "", {}, index=3)


def test_numeric_types_and_components_are_accepted():
    @register("test_numpy_score")
    def numpy_score(response, ground_truth, *, extra_info):
        return {"score": np.float32(0.5), "part": np.int64(1), "flag": True}

    assert call_reward("test_numpy_score", "", "", {}) == (0.5, {"part": 1.0, "flag": 1.0})


def test_plugins_get_their_own_copy_of_extra_info():
    seen = {}

    @register("test_mutates_extra")
    def mutates(response, ground_truth, *, extra_info):
        extra_info["touched"] = True
        seen.update(extra_info)
        return 1.0

    original = {"choices": ["a"]}
    call_reward("test_mutates_extra", "", "", original)
    assert seen["touched"] and "touched" not in original


def test_import_hints_name_the_registering_module():
    from tests.rewards import reward_plugins_for_tests  # noqa: F401

    assert import_hints("0.5*test_echo+0.5*math") == ("tests.rewards.reward_plugins_for_tests",)
    assert import_hints("math") == ()


def test_main_module_hint_is_its_file(monkeypatch, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("")
    main = type(sys)("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)

    def in_main(response, ground_truth, *, extra_info):
        return 1.0

    in_main.__module__ = "__main__"
    register("test_in_main_script")(in_main)
    assert import_hints("test_in_main_script") == (str(script),)


def test_a_file_plugin_is_a_real_module_so_dataclasses_in_it_work(tmp_path):
    plugin = tmp_path / "with_dataclass.py"
    plugin.write_text(textwrap.dedent('''
        from __future__ import annotations
        from dataclasses import dataclass

        @dataclass
        class Rubric:
            weight: float

        def graded(response, ground_truth, *, extra_info):
            return Rubric(1.0).weight * float(response == ground_truth)
    '''))
    assert get_reward(f"{plugin}:graded")("a", "a", extra_info={}) == 1.0


def test_a_plugin_registered_interactively_is_refused_for_workers_with_the_way_out(monkeypatch):
    main = type(sys)("__main__")  # python -c, a REPL or a notebook: no __file__ a worker could load
    monkeypatch.setitem(sys.modules, "__main__", main)

    def typed_in(response, ground_truth, *, extra_info):
        return 1.0

    typed_in.__module__ = "__main__"
    register("test_typed_in")(typed_in)
    with pytest.raises(RewardError, match="registered in an interactive session .* score with workers=0"):
        import_hints("test_typed_in")
    from rewards import score_batch

    assert score_batch([{"response": "a", "ground_truth": "a"}], reward="test_typed_in", workers=0).summary.ok == 1


def test_a_composition_of_one_term_at_weight_one_is_that_reward():
    assert get_reward("1*math") is get_reward("1.0*math") is get_reward("math")


def test_check_reward_loads_plugin_files_in_a_child_process_once_per_version(tmp_path):
    """The trainer checks its rewards without running their code in its own process."""
    plugin, loads = tmp_path / "checked.py", tmp_path / "loads.txt"
    plugin.write_text(f"import os\nopen({str(loads)!r}, 'a').write(f'{{os.getpid()}}\\n')\n\n"
                      "def score(response, ground_truth, *, extra_info):\n    return 1.0\n\n"
                      "def wrong(response):\n    return 1.0\n")
    check_reward(f"{plugin}:score")
    check_reward(f"{plugin}:score")
    pids = loads.read_text().split()
    assert len(pids) == 1 and int(pids[0]) != os.getpid()
    assert not any(getattr(m, "__file__", None) == str(plugin) for m in list(sys.modules.values()))
    os.utime(plugin, (1, 2_000_000_000))  # an edited file is checked again, also as part of a composition
    check_reward(f"0.5*{plugin}:score+0.5*math")
    assert len(loads.read_text().split()) == 2
    for spec, message in ((f"{plugin}:nope", "has no function 'nope'"),
                          (f"{plugin}:wrong", r"must accept \(response, ground_truth"),
                          (f"0.5*math+0.5*{tmp_path}/absent.py:score", "reward file not found")):
        with pytest.raises(RewardError, match=message):
            check_reward(spec)


def test_the_load_check_goes_with_a_caller_stopped_by_sigterm(tmp_path):
    """`ray job stop` sends SIGTERM: the child loading a plugin (in a session of its own) outlived the
    run, holding whatever the plugin's import loads."""
    import signal
    import subprocess

    plugin, pid_file = tmp_path / "slow_import.py", tmp_path / "pid.txt"
    plugin_file(plugin, f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n")
    caller = subprocess.Popen([sys.executable, "-c", f"from rewards import check_reward; check_reward({f'{plugin}:score'!r})"])
    for _ in range(300):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    loader = int(pid_file.read_text())
    caller.send_signal(signal.SIGTERM)
    caller.wait(timeout=30)
    for _ in range(100):
        status = f"/proc/{loader}/status"
        if not os.path.exists(status) or "zombie" in open(status).read():
            break
        time.sleep(0.1)
    assert not os.path.exists(status) or "zombie" in open(status).read()


def test_check_reward_loads_under_the_workers_memory_limit(tmp_path):
    """A plugin that holds 300 MB from its import passed the check, then failed every item in the
    workers (100 MB): the check now loads it as a worker would, warmed up and capped."""
    plugin = tmp_path / "holds_a_table.py"
    plugin.write_text("TABLE = bytearray(300 * 2**20)\n\ndef score(response, ground_truth, *, extra_info):\n    return 1.0\n")
    check_reward(f"{plugin}:score")  # no limit asked
    with pytest.raises(RewardError, match=r"failed: MemoryError: .*\(over the reward workers' memory limit, 100 MiB "
                                          r"beyond a worker's start: raise it with reward.memory_mb"):
        check_reward(f"0.5*math+0.5*{plugin}:score", memory_mb=100)
    check_reward(f"{plugin}:score", memory_mb=1000)


@pytest.mark.parametrize("body,message", [
    ("import os\nos._exit(3)\n", "ended the process that loaded it (exit code 3)"),
    ("raise SystemExit('no config file')\n", "raised SystemExit: no config file"),
    ("raise ImportError('needs torch_scatter')\n", "failed: ImportError: needs torch_scatter"),
    ("import subprocess, time\nopen(PID_FILE, 'w').write(str(subprocess.Popen(['sleep', '600']).pid))\n"
     "time.sleep(600)\n", "took more than 1 s (tried in a separate process, which was killed)"),
])
def test_check_reward_survives_a_plugin_that_exits_raises_or_hangs_at_import(tmp_path, monkeypatch, body, message):
    monkeypatch.setattr(rewards.registry, "LOAD_LIMIT_S", 1.0)
    plugin, pid_file = tmp_path / "bad_import.py", tmp_path / "pid.txt"
    plugin_file(plugin, body.replace("PID_FILE", repr(str(pid_file))))
    started = time.monotonic()
    with pytest.raises(RewardError) as err:
        check_reward(f"{plugin}:score")
    assert message in str(err.value)
    assert str(plugin) in str(err.value) and time.monotonic() - started < 30
    if pid_file.exists():  # what the plugin started went with it
        status = f"/proc/{pid_file.read_text()}/status"
        for _ in range(50):
            if not os.path.exists(status) or "zombie" in open(status).read():
                break
            time.sleep(0.1)
        assert not os.path.exists(status) or "zombie" in open(status).read()


def test_a_users_plugin_that_raises_says_which_line_of_it_raised(tmp_path):
    """Worker errors are one line: the plugin's own line that raised is in it (the last frame, a library's,
    would point into the library); the built-ins' errors are about the answer, not their code."""
    plugin = tmp_path / "mine.py"
    plugin.write_text("import json\n\ndef score(response, ground_truth, *, extra_info):\n"
                      "    return float(json.loads(response)['value'])\n")
    with pytest.raises(RewardError, match=r"raised JSONDecodeError: .* \(mine.py line 4\)$"):
        call_reward(f"{plugin}:score", "not json", "", {})
    with pytest.raises(RewardError, match=r"raised KeyError: 'value' \(mine.py line 4\)$"):
        call_reward(f"{plugin}:score", "{}", "", {})
    with pytest.raises(RewardError) as info:
        call_reward("math", "<answer>3</answer>", "", {})
    assert "line" not in str(info.value)


def test_a_module_spec_names_its_file_to_fingerprint_without_importing_it(tmp_path, monkeypatch):
    """`my_rewards:judge` is code a run judges with, as `my_rewards.py:judge` is: its file is what a resume
    compares (an edit makes the stages that judged with it incomplete). Finding it imports nothing."""
    from rewards.registry import plugin_files

    (tmp_path / "my_rewards_fp.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "pkg_fp").mkdir()
    (tmp_path / "pkg_fp" / "__init__.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "pkg_fp" / "scores.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugin_files("my_rewards_fp:judge") == [str(tmp_path / "my_rewards_fp.py")]
    assert plugin_files("0.5*pkg_fp.scores:judge+0.5*pkg_fp:other") == [str(tmp_path / "pkg_fp" / "scores.py"),
                                                                       str(tmp_path / "pkg_fp" / "__init__.py")]
    assert plugin_files("math+rewards.format:format_reward+no_such_module_fp:f") == []
    assert "my_rewards_fp" not in sys.modules and "pkg_fp" not in sys.modules
