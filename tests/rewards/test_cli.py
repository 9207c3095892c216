"""`openvlt rewards score|list`."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rewards.cli import main

LINES = [
    {"response": "<think>1 + 2 = 3</think> <answer>3</answer>", "ground_truth": "3"},
    {"response": "<answer>B</answer>", "ground_truth": "C", "extra_info": {"choices": ["2", "4", "3"]}},
    "this line is not JSON",
    {"response": "<answer>3</answer>", "ground_truth": "3", "reward": "0.9*math+0.1*format"},
    {"response": "hang", "ground_truth": "", "reward": "test_misbehave"},
    [1, 2],
]


def write_input(path):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in LINES))
    return path


def test_score_writes_one_line_per_input_line_in_order(tmp_path, capsys):
    from tests.rewards import reward_plugins_for_tests  # noqa: F401  (registers test_misbehave)

    source, output = write_input(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    code = main(["score", str(source), "--reward", "math", "--workers", "2", "--timeout", "0.5", "--output", str(output)])
    assert code == 1  # some lines have errors; every line was written
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == len(LINES)
    assert lines[0] == {"score": 1.0, "error": None}
    assert lines[1] == {"score": 0.0, "error": None}
    assert lines[2]["score"] is None and "line 3 is not JSON" in lines[2]["error"]
    assert lines[3] == {"score": {"score": pytest.approx(0.9), "math": 1.0, "format": 0.0}, "error": None}
    assert lines[4]["score"] is None and "timed out after 0.5 s" in lines[4]["error"]
    assert lines[5]["score"] is None and "line 6 is not a JSON object" in lines[5]["error"]
    summary = capsys.readouterr().err
    assert "items=6 ok=3 errors=2 timeouts=1" in summary and "items/s=" in summary


def test_timeouts_alone_exit_1_and_a_clean_file_exits_0(tmp_path, capsys):
    from tests.rewards import reward_plugins_for_tests  # noqa: F401  (registers test_misbehave)

    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps(LINES[0]) + "\n" + json.dumps(LINES[4]) + "\n")  # right, then one that hangs
    assert main(["score", str(source), "--reward", "math", "--workers", "1", "--timeout", "0.5", "--output", str(output)]) == 1
    assert [json.loads(line)["score"] for line in output.read_text().splitlines()] == [1.0, None]
    assert "errors=0 timeouts=1" in capsys.readouterr().err
    source.write_text(json.dumps(LINES[0]) + "\n" + json.dumps(LINES[1]) + "\n")  # one right, one wrong: no failure
    assert main(["score", str(source), "--reward", "math", "--workers", "1", "--output", str(output)]) == 0


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_error_names_the_input_line_and_a_plugin_that_exits_fails_its_line_only(tmp_path, workers):
    """Item numbers count from 0 and lines from 1: an error names the line (and the line's own id); a blank
    line says so; a plugin calling sys.exit() is that line's error, also in this process (--workers 0), whose
    output used to stop there, without a summary."""
    plugin = tmp_path / "exiting.py"
    plugin.write_text("def score(response, ground_truth, *, extra_info):\n"
                      "    if response == 'bye':\n        raise SystemExit(3)\n    return 1.0\n")
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"response": "a", "ground_truth": "3"}) + "\n"
                      + json.dumps({"response": "bye", "ground_truth": "3", "id": "q7"}) + "\n"
                      + json.dumps({"response": "c"}) + "\n\n")
    assert main(["score", str(source), "--reward", f"{plugin}:score", "--workers", workers, "--output", str(output)]) == 1
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["score"] for line in lines] == [1.0, None, None, None]
    assert "on item 1 (line 2, id q7) raised SystemExit: 3" in lines[1]["error"]
    assert "on item 2 (line 3): 'ground_truth'" in lines[2]["error"] and "line 4 is blank" in lines[3]["error"]


def test_a_line_that_is_not_utf8_gets_its_error_line_and_the_others_are_scored(tmp_path):
    source, output = tmp_path / "latin1.jsonl", tmp_path / "out.jsonl"
    good = json.dumps(LINES[0]).encode()
    source.write_bytes(good + b"\n" + '{"response": "<answer>caf\u00e9</answer>", "ground_truth": "3"}'.encode("latin-1")
                       + b"\n" + good + b"\n")
    assert main(["score", str(source), "--reward", "math", "--workers", "0", "--output", str(output)]) == 1
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["score"] for line in lines] == [1.0, None, 1.0]
    assert lines[1]["error"] == "reward 'math' on item 1: line 2 is not UTF-8 text (byte 0xe9 at position 25)"


def test_unknown_reward_exits_2(tmp_path, capsys):
    assert main(["score", str(write_input(tmp_path / "in.jsonl")), "--reward", "mth"]) == 2
    assert "did you mean 'math'" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "cannot read missing.jsonl: No such file or directory"),
    (["IN", "--output", "no/such/folder/out.jsonl"], "cannot write no/such/folder/out.jsonl: No such file or directory"),
    (["IN", "--workers", "-1"], "--workers must be >= 0 (0: in this process), got -1"),
    (["IN", "--timeout", "0"], "--timeout must be > 0 seconds, got 0.0"),
])
def test_usage_errors_exit_2_before_any_line_apart_from_lines_that_fail(tmp_path, capsys, monkeypatch, args, message):
    """A script tells "my plugin failed a line" (1) from "I called it wrong" (2)."""
    monkeypatch.chdir(tmp_path)
    write_input(tmp_path / "in.jsonl")
    assert main(["score", *[a.replace("IN", "in.jsonl") for a in args], "--reward", "math"]) == 2
    captured = capsys.readouterr()
    assert f"openvlt rewards: {message}" in captured.err
    assert captured.out == ""


def test_extra_info_may_be_a_json_string_as_record_files_store_it(tmp_path, capsys):
    lines = [{"response": "<answer>B</answer>", "ground_truth": "B", "extra_info": json.dumps({"choices": ["2", "4"]})},
             {"response": "<answer>4</answer>", "ground_truth": "B", "extra_info": json.dumps({"choices": ["2", "4"]})},
             {"response": "<answer>4</answer>", "ground_truth": "B", "extra_info": "{choices: 2"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["score", str(tmp_path / "in.jsonl"), "--reward", "math", "--workers", "0"]) == 1
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[:2] == [{"score": 1.0, "error": None}, {"score": 1.0, "error": None}]  # "4" is option B
    assert out[2]["score"] is None and "line 3: extra_info is a string that is not JSON" in out[2]["error"]


def test_a_line_without_a_data_source_gets_the_input_files_name_as_a_record_files_rows_do(tmp_path, capsys):
    """A verl-form reward picks its scorer by the data source: one a line leaves out is the file's name."""
    plugin = tmp_path / "by_source.py"
    plugin.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
                      "    return {'gsm8k': 1.0, 'answers': 0.5}[data_source]\n")
    lines = [{"response": "x", "ground_truth": "y"}, {"response": "x", "ground_truth": "y", "data_source": "gsm8k"}]
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["score", str(tmp_path / "answers.jsonl"), "--reward", f"{plugin}:compute_score", "--workers", "0"]) == 0
    assert [json.loads(line)["score"] for line in capsys.readouterr().out.splitlines()] == [0.5, 1.0]


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert {line.split()[0] for line in out.splitlines()} >= {"math", "format", "iou"}


def test_installed_command_reads_stdin_and_writes_stdout():
    lines = "\n".join(json.dumps(line) for line in LINES[:2]) + "\n"
    done = subprocess.run([sys.executable, "-m", "openvlt.cli", "rewards", "score", "-", "--reward", "math",
                           "--workers", "1"], input=lines, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["score"] for line in done.stdout.splitlines()] == [1.0, 0.0]
    assert "items=2 ok=2" in done.stderr


def test_stdout_holds_only_results_when_the_plugin_prints_and_a_module_next_to_you_is_found(tmp_path):
    (tmp_path / "chatty.py").write_text(  # prints, and starts a program that writes to the stdout it inherits
        "import subprocess\nprint('loading chatty v1')\n\n"
        "def exact(response, ground_truth, *, extra_info):\n    print('scoring', response)\n"
        "    subprocess.run(['echo', 'from a subprocess'])\n"
        "    return float(response == ground_truth)\n")
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(line) for line in LINES[:2]) + "\n")
    command = Path(sys.executable).with_name("openvlt")  # the console script: unlike `python -m`, no cwd on sys.path
    assert command.exists()
    for reward, workers in (("chatty.py:exact", "0"), ("chatty:exact", "1")):  # a file; a module in the cwd
        done = subprocess.run([str(command), "rewards", "score", "in.jsonl", "--reward", reward, "--workers", workers],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert [json.loads(line)["error"] for line in done.stdout.splitlines()] == [None, None], done.stdout
        assert "loading chatty v1" in done.stderr and "from a subprocess" in done.stderr


def test_memory_mb_bounds_each_worker_and_an_item_over_it_says_which_limit(tmp_path, capsys):
    """A plugin that holds a model needs more than the default: the error names the limit and the flag."""
    plugin = tmp_path / "big.py"
    plugin.write_text("def score(response, ground_truth, *, extra_info):\n"
                      "    block = bytearray(int(response) * 2**20)\n    return float(len(block) > 0)\n")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"response": "300", "ground_truth": ""}) + "\n")
    code = main(["score", str(source), "--reward", f"{plugin}:score", "--workers", "1", "--memory-mb", "100"])
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert code == 1 and line["score"] is None and "MemoryError" in line["error"]
    assert "(over the reward workers' memory limit, 100 MiB beyond a worker's start: raise it with reward.memory_mb, or " \
           "--memory-mb for `openvlt rewards score`)" in line["error"]
    assert main(["score", str(source), "--reward", f"{plugin}:score", "--workers", "1", "--memory-mb", "1000"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == {"score": 1.0, "error": None}
    assert main(["score", str(source), "--reward", "math", "--memory-mb", "0"]) == 2
    from rewards import _worker

    _worker._memory_mb = 100  # as in a worker; CUDA's out-of-memory error is no worker's memory limit
    cuda = "reward 'x' on item 0 raised OutOfMemoryError: CUDA out of memory"
    assert _worker.memory_named(cuda) == cuda and "reward.memory_mb" in _worker.memory_named("raised MemoryError: ")
    _worker._memory_mb = 0
