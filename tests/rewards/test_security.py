"""Model output is never evaluated: no eval/exec/sympify/parse_expr on it anywhere in our code."""
import ast
import builtins
import pathlib

import pytest

import rewards
from rewards import score_batch
from rewards.math_answer import math_reward

PACKAGE = pathlib.Path(rewards.__file__).parent
BUILTINS = {"eval", "exec", "compile", "__import__"}
EVALUATING = {"sympify", "parse_expr", "S", "eval", "exec", "parse_latex"}


def test_no_forbidden_calls_in_the_package_source():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Name) and node.func.id in BUILTINS | EVALUATING:
                offenders.append(f"{path.name}:{node.lineno} {node.func.id}()")
            if isinstance(node.func, ast.Attribute) and node.func.attr in EVALUATING:
                offenders.append(f"{path.name}:{node.lineno} .{node.func.attr}()")
    assert offenders == []


def payloads(marker):
    return [
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
        f"__import__(\"os\").system(\"touch {marker}\")",
        f"exec(\"open({str(marker)!r}, 'w')\")",
        f"eval(\"__import__('os').system('touch {marker}')\")",
        "().__class__.__bases__[0].__subclasses__()",
        "lambda: __import__('os')",
        f"\\text{{__import__('os').system('touch {marker}')}}",
        f"x = __import__('os').system('touch {marker}')",
        "9**9**9**9**9",
        "Symbol('x').__class__",
        "{{7*7}}",
    ]


def test_injection_answers_run_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    seen = []
    real_eval, real_exec = builtins.eval, builtins.exec

    def spy(real):
        def wrapper(source, *args, **kwargs):
            seen.append(str(source))
            return real(source, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(builtins, "eval", spy(real_eval))
    monkeypatch.setattr(builtins, "exec", spy(real_exec))
    for payload in payloads(marker):
        for truth, extra in (("3", {}), ("x", {}), ("C", {"choices": ["1", "2", "3"]}), ("\\{1,2\\}", {})):
            response = f"<think>ok</think> <answer>{payload}</answer>"
            assert math_reward(response, truth, extra_info=extra) == 0.0
            assert math_reward(f"\\boxed{{{payload}}}", truth, extra_info=extra) == 0.0
    assert not marker.exists()
    leaked = [s for s in seen if any(token in s for token in ("pwned", "__subclasses__", "__bases__", "Symbol('x')"))]
    assert leaked == []  # no eval/exec anywhere (sympy's, inside math-verify, included) saw a payload


def test_injection_answers_in_worker_processes(tmp_path):
    marker = tmp_path / "pwned"
    items = [{"response": f"<answer>{p}</answer>", "ground_truth": "3"} for p in payloads(marker)]
    results = score_batch(items, "0.5*math+0.5*format", workers=1, timeout=5.0)
    assert all(r.ok and r.score == 0.0 for r in results)
    assert not marker.exists()
