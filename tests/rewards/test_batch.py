"""The batch scorer: order, counts, hard time limits, crashes, memory, reuse, streaming, concurrency."""
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests.conftest import plugin_file
from tests.rewards import reward_plugins_for_tests
from rewards import RewardError, RewardScorer, iter_scores, score_batch

TOY = "<think>Row 1: red circle, empty.</think> <answer>{}</answer>"


def toy_items(n):
    return [{"response": TOY.format(i % 4), "ground_truth": str(i % 3)} for i in range(n)]


@pytest.fixture(scope="module")
def scorer():
    with RewardScorer(workers=2) as scorer:
        yield scorer


def test_results_keep_input_order_and_counts(scorer):
    items = toy_items(300)
    results = scorer.score(items, "math", timeout=5.0)
    assert [r.index for r in results] == list(range(300))
    assert [r.score for r in results] == [float(i % 4 == i % 3) for i in range(300)]
    assert results.summary.items == 300 and results.summary.ok == 300
    assert results.summary.errors == results.summary.timeouts == 0
    assert results.summary.mean_score == pytest.approx(sum(i % 4 == i % 3 for i in range(300)) / 300)


def test_item_rewards_override_the_batch_reward(scorer):
    items = [
        {"response": TOY.format(3), "ground_truth": "3"},
        {"response": TOY.format(3), "ground_truth": "3", "reward": "format"},
        {"response": "<answer>3</answer>", "ground_truth": "3", "reward": "0.9*math+0.1*format"},
        {"response": "<answer>[0, 0, 2, 2]</answer>", "ground_truth": "[0, 0, 2, 4]", "extra_info": {"reward": "iou"}},
    ]
    results = scorer.score(items, "math", timeout=5.0)
    assert [r.reward for r in results] == ["math", "format", "0.9*math+0.1*format", "iou"]
    assert results[2].score == pytest.approx(0.9) and results[2].components == {"math": 1.0, "format": 0.0}
    assert results[3].score == pytest.approx(0.5)
    assert results[2].to_json() == {"score": {"score": pytest.approx(0.9), "math": 1.0, "format": 0.0}, "error": None}


def test_malformed_items_are_errors_in_place(scorer):
    items = [*toy_items(2), "not a dict", {"response": None, "ground_truth": "1"}, {"response": "x"},
             {"response": "x", "ground_truth": "1", "extra_info": [1]}, {"response": "x", "ground_truth": "1", "reward": "nope"},
             {"response": TOY.format(1), "ground_truth": 1}]  # a numeric ground truth is fine
    results = scorer.score(items, "math", timeout=5.0)
    assert [r.status for r in results] == ["ok", "ok", "error", "error", "error", "error", "error", "ok"]
    assert results[6].error.startswith("reward 'nope' on item 6: unknown reward 'nope'")
    assert results[3].error == "reward 'math' on item 3: 'response' must be a string, got NoneType"
    assert results[7].score == 1.0
    assert math.isnan(results[2].score) and results.scores(fill=0.0)[2] == 0.0


def test_a_failure_names_the_callers_id_for_its_item(scorer):
    """Workers know an item's place in the batch only; the caller's id (a problem's) is put next to it."""
    items = [{"response": "ok", "ground_truth": "", "id": f"problem p{i}, answer 0"} for i in range(6)]
    items[1] = {"response": "raise", "ground_truth": "", "id": "problem p1, answer 0"}
    items[3] = {"response": "hang", "ground_truth": "", "id": "problem p3, answer 0"}
    items[4] = {"response": None, "ground_truth": "", "id": 44}
    results = _within(60, lambda: scorer.score(items, "test_misbehave", timeout=0.5))
    assert [r.status for r in results] == ["ok", "error", "ok", "timeout", "error", "ok"]
    raise_line = next(i for i, line in enumerate(Path(reward_plugins_for_tests.__file__).read_text().splitlines(), 1)
                      if "the plugin failed on purpose" in line)  # where the plugin raised: a worker's error says so
    assert results[1].error == ("reward 'test_misbehave' on item 1 (problem p1, answer 0) raised ValueError: the plugin "
                                f"failed on purpose (reward_plugins_for_tests.py line {raise_line})")
    assert results[3].error == "reward 'test_misbehave' on item 3 (problem p3, answer 0) timed out after 0.5 s (worker killed)"
    assert results[4].error == "reward 'test_misbehave' on item 4 (44): 'response' must be a string, got NoneType"


def test_an_unknown_batch_reward_raises_before_any_work(scorer):
    with pytest.raises(RewardError, match="unknown reward 'mth'"):
        scorer.score(toy_items(3), "mth")


def test_timeout_must_be_positive(scorer):
    with pytest.raises(ValueError):
        scorer.score(toy_items(1), "math", timeout=0)


@pytest.mark.parametrize("runaway", ["hang", "sleep", "bigint"])
def test_a_runaway_item_is_stopped_at_its_limit(scorer, runaway):
    items = [{"response": "ok", "ground_truth": ""} for _ in range(40)]
    items[17] = {"response": runaway, "ground_truth": ""}
    results = _within(60, lambda: scorer.score(items, "test_misbehave", timeout=0.5))  # endless, were it not stopped
    assert results[17].status == "timeout" and math.isnan(results[17].score)
    assert results[17].error == "reward 'test_misbehave' on item 17 timed out after 0.5 s (worker killed)"
    assert 0.5 <= results[17].seconds < 1.5  # from the item's start to the kill (a loaded machine starts workers slowly)
    assert results.summary.timeouts == 1 and results.summary.ok == 39 and results.summary.errors == 0


def test_a_crash_or_memory_blowup_fails_only_its_item():
    items = [{"response": "ok", "ground_truth": ""} for _ in range(30)]
    items[4] = {"response": "crash", "ground_truth": ""}
    items[20] = {"response": "memory", "ground_truth": ""}
    items[25] = {"response": "raise", "ground_truth": ""}
    with RewardScorer(workers=2, memory_mb=512) as capped:
        results = capped.score(items, "test_misbehave", timeout=5.0)
    assert results[4].status == "error" and "crashed its worker process (exit code 7)" in results[4].error
    assert results[20].status == "error" and "MemoryError" in results[20].error  # 1 GiB past the workers' 512 MB cap
    assert "ValueError: the plugin failed on purpose" in results[25].error
    assert results.summary.ok == 27 and results.summary.errors == 3


def test_an_item_that_cannot_be_sent_is_an_error(scorer):
    items = toy_items(3)
    items[1] = {**items[1], "extra_info": {"callback": lambda: None}}
    results = scorer.score(items, "math", timeout=5.0)
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert "cannot be sent to a worker" in results[1].error


def _within(seconds, fn):
    """fn() run in a thread; its result, or a failure if it has not returned after `seconds` (a hang)."""
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"still waiting after {seconds} s"
    return box[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_killed_while_idle_are_replaced_and_the_next_batch_is_scored(workers):
    """An OOM kill or an operator between two GRPO steps must not hang the next step."""
    items = [{"response": "a", "ground_truth": "a"}] * 4
    with RewardScorer(workers=workers) as scorer:
        pids = {r.components["pid"] for r in scorer.score(items, "test_echo", timeout=5.0)}
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.5)
        results = _within(30, lambda: scorer.score(items, "test_echo", timeout=5.0))
    assert results.summary.ok == 4 and not pids & {r.components["pid"] for r in results}


def test_loading_a_plugin_does_not_count_against_its_items_time_limit(tmp_path):
    """A plugin that loads a tokenizer or a table at import may take longer than one item may."""
    plugin = plugin_file(tmp_path / "slow_to_import.py", "import time\ntime.sleep(2.0)")
    results = score_batch([{"response": "x", "ground_truth": "x"}] * 3, reward=plugin, workers=1, timeout=1.0)
    assert [r.status for r in results] == ["ok"] * 3


def test_an_item_that_hangs_right_after_its_plugin_loaded_is_stopped_at_its_own_limit(tmp_path):
    """The first item of a chunk starts when the load ends, which no message announces: it used to run
    until the load's 120 s limit before anyone looked."""
    plugin = tmp_path / "slow_then_hangs.py"
    plugin.write_text("import time\ntime.sleep(1.0)\n\ndef score(response, ground_truth, *, extra_info):\n"
                      "    while response == 'hang':\n        pass\n    return 1.0\n")
    items = [{"response": "hang", "ground_truth": "x"}, {"response": "x", "ground_truth": "x"}]
    with RewardScorer(workers=1) as scorer:
        started = time.monotonic()
        results = _within(60, lambda: scorer.score(items, f"{plugin}:score", timeout=0.5))
        elapsed = time.monotonic() - started
    assert [r.status for r in results] == ["timeout", "ok"] and 0.5 <= results[0].seconds < 1.5
    assert elapsed < 30  # a worker start, two loads of 1 s and the 0.5 s limit; not 120 s


def test_a_timed_out_item_takes_the_processes_its_plugin_started_with_it(tmp_path):
    """A code-execution reward runs the answer in a subprocess: the timeout kills that too, not only the
    worker (left alone, it would run on, and hold the caller's stderr open)."""
    plugin = tmp_path / "runs_code.py"
    plugin.write_text("import pathlib, subprocess, sys\n\ndef score(response, ground_truth, *, extra_info):\n"
                      "    child = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
                      f"    pathlib.Path({str(tmp_path / 'child.pid')!r}).write_text(str(child.pid))\n"
                      "    child.wait()\n    return 1.0\n")
    results = _within(60, lambda: score_batch([{"response": "x", "ground_truth": "x"}], reward=f"{plugin}:score",
                                              workers=1, timeout=1.0))
    assert [r.status for r in results] == ["timeout"]
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_workers_are_reused_across_calls(scorer):
    items = [{"response": "a", "ground_truth": "a"}] * 200
    first = {r.components["pid"] for r in scorer.score(items, "test_echo", timeout=5.0)}
    second = {r.components["pid"] for r in scorer.score(items, "test_echo", timeout=5.0)}
    assert first == second and len(first) <= 2 and os.getpid() not in first


def test_streaming_reads_input_lazily_and_keeps_order(scorer):
    pulled = 0

    def items():
        nonlocal pulled
        for item in toy_items(2000):
            pulled += 1
            yield item

    stream = scorer.iter_scores(items(), "math", timeout=5.0, window=64)
    first = next(stream)
    assert first.index == 0 and pulled <= 64
    rest = list(stream)
    assert [r.index for r in rest] == list(range(1, 2000)) and pulled == 2000


def test_in_process_scoring_matches_the_pool(scorer):
    items = toy_items(50) + [{"response": "<answer>\\frac{1}{2^{99}}</answer>", "ground_truth": "\\frac{1}{2^{98}}"}]
    inline = RewardScorer(workers=0).score(items, "math", timeout=1.0)
    pooled = scorer.score(items, "math", timeout=5.0)
    assert [r.score for r in inline] == [r.score for r in pooled]


def test_concurrent_callers_from_threads(scorer):
    def call(k):
        items = [{"response": TOY.format(k), "ground_truth": str(k)}] * 50 + toy_items(50)
        return [r.score for r in scorer.score(items, "math", timeout=5.0)]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(16)))
    for k, scores in enumerate(outcomes):
        assert scores[:50] == [1.0] * 50 and scores[50:] == [float(i % 4 == i % 3) for i in range(50)]


def test_from_async_code(scorer):
    import asyncio

    async def main():
        calls = [asyncio.to_thread(scorer.score, [{"response": TOY.format(k), "ground_truth": str(k)}], "math")
                 for k in range(8)]
        return [results[0].score for results in await asyncio.gather(*calls)]

    assert asyncio.run(main()) == [1.0] * 8


def test_math_plugin_runs_in_threads_without_signal_errors():
    from rewards.math_answer import math_reward

    cases = [("<answer>2\\sqrt{2}</answer>", "\\sqrt{8}", 1.0), ("<answer>\\{1,2\\}</answer>", "\\{2,1\\}", 1.0),
             ("<answer>y=2x+1</answer>", "2x-y+1=0", 1.0), ("<answer>1/2^99</answer>", "1/2^98", 0.0)]

    def run(case):
        response, truth, _ = case
        return math_reward(response, truth, extra_info={})

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(run, cases * 4)) == [c[2] for c in cases] * 4


def test_shared_scorer_functions_score_right_and_share_their_workers():
    expected = [float(i % 4 == i % 3) for i in range(10)]
    assert [r.score for r in score_batch(toy_items(10), "math", workers=1, timeout=5.0)] == expected
    assert [r.score for r in iter_scores(toy_items(10), "math", workers=1, timeout=5.0)] == expected
    echo = [{"response": "a", "ground_truth": "a"}] * 4
    batch_pids = {r.components["pid"] for r in score_batch(echo, "test_echo", workers=1, timeout=5.0)}
    stream_pids = {r.components["pid"] for r in iter_scores(echo, "test_echo", workers=1, timeout=5.0)}
    assert batch_pids == stream_pids and len(batch_pids) == 1 and os.getpid() not in batch_pids


def test_from_a_process_pool_and_a_daemonic_pool():
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        assert pool.submit(reward_plugins_for_tests.score_in_child, 6).result(timeout=60) == [0, 1, 0, 0, 1, 0]
    with spawn.Pool(1) as pool:  # daemonic workers cannot start multiprocessing children; ours still can
        assert pool.apply(reward_plugins_for_tests.score_in_child, (3,)) == [0, 1, 0]


def test_from_ray_tasks_and_a_threaded_actor():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        @ray.remote
        def task(n):
            from rewards import score_batch

            items = [{"response": f"<answer>{i}</answer>", "ground_truth": "1"} for i in range(n)]
            return score_batch(items, "math", workers=1, timeout=5.0).scores()

        @ray.remote(max_concurrency=4)  # a threaded actor: calls arrive on non-main threads
        class Judge:
            def pooled(self, k):
                from rewards import score_batch

                return score_batch([{"response": f"<answer>{k}</answer>", "ground_truth": str(k)}],
                                   "math", workers=1, timeout=5.0).scores()

            def in_thread(self, answer, truth):
                from rewards.math_answer import math_reward

                return math_reward(f"<answer>{answer}</answer>", truth, extra_info={})

        assert ray.get([task.remote(3) for _ in range(2)]) == [[0.0, 1.0, 0.0]] * 2
        judge = Judge.remote()
        assert ray.get([judge.pooled.remote(k) for k in range(6)]) == [[1.0]] * 6
        assert ray.get([judge.in_thread.remote("2\\sqrt{2}", "\\sqrt{8}"), judge.in_thread.remote("3", "4")]) == [1.0, 0.0]
    finally:
        ray.shutdown()


OWNER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    import tests.rewards.reward_plugins_for_tests
    from rewards import RewardScorer, score_batch
    score_batch([{{"response": "x", "ground_truth": "x"}}], "test_echo", workers=2, timeout=5)
    scorer = RewardScorer(workers=1)
    stream = scorer.iter_scores([{{"response": "hang", "ground_truth": ""}}], "test_misbehave", timeout=600)
    import threading
    threading.Thread(target=lambda: list(stream), daemon=True).start()
    time.sleep(1.5)
    import psutil
    print(" ".join(str(c.pid) for c in psutil.Process().children()), flush=True)
    if sys.argv[1] == "hang":
        time.sleep(600)
    if sys.argv[1] == "ctrl-c twice":  # the second while the pools close at exit (waiting on the busy worker)
        import atexit, os, signal
        atexit.register(lambda: threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start())
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(600)
""")


@pytest.mark.parametrize("how", ["exit", "sigkill", "ctrl-c twice"])
def test_no_worker_outlives_its_owner(how, tmp_path):
    """However the owner ends (a second Ctrl-C while it closes its workers at exit: without a traceback)."""
    script = tmp_path / "owner.py"
    script.write_text(OWNER.format(repo=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    owner = subprocess.Popen([sys.executable, str(script), "hang" if how == "sigkill" else how],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = [int(p) for p in owner.stdout.readline().split()]
    assert len(pids) == 3  # two shared workers and one busy in an endless loop
    if how == "sigkill":
        owner.send_signal(signal.SIGKILL)
    _, stderr = owner.communicate(timeout=30)
    assert "atexit" not in stderr and stderr.count("KeyboardInterrupt") <= 1, stderr  # (the first one's traceback)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_closing_a_scorer_stops_its_workers_and_a_later_call_starts_new_ones():
    scorer = RewardScorer(workers=1)
    items = [{"response": "x", "ground_truth": "x"}] * 2
    first = {int(r.components["pid"]) for r in scorer.score(items, "test_echo", timeout=5.0)}
    scorer.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in first):
        time.sleep(0.05)
    assert first and not any(_alive(p) for p in first)
    second = {int(r.components["pid"]) for r in scorer.score(items, "test_echo", timeout=5.0)}
    assert second and not second & first
    scorer.close()


def test_memory_of_a_long_stream_stays_bounded(scorer):
    """Items are let go once scored: 6,000 responses of 20 KB (120 MB) stream through in the memory of a window."""
    process = psutil.Process()
    stream = scorer.iter_scores(({"response": TOY.format(1) + "x" * 20_000, "ground_truth": "1"} for _ in range(6_000)),
                                "math", timeout=5.0, window=256)
    before = None
    for i, result in enumerate(stream):
        assert result.ok
        if i == 500:
            before = process.memory_info().rss
    assert process.memory_info().rss - before < 40 * 2**20


def test_a_worker_whose_plugin_ran_out_of_memory_is_replaced_so_later_items_are_scored(tmp_path):
    """A plugin cache that grows past the memory cap fails one item, not every later one."""
    plugin = tmp_path / "leaky.py"
    plugin.write_text("_cache = []\n\ndef score(response, ground_truth, *, extra_info):\n"
                      "    _cache.append(bytearray(60 * 2**20))\n    return 1.0\n")
    results = score_batch([{"response": "x", "ground_truth": "x"}] * 24, reward=f"{plugin}:score", workers=1,
                          timeout=5.0, memory_mb=300)
    marks = "".join("." if r.ok else "E" for r in results)
    assert "EE" not in marks and marks.count("E") >= 2 and all("MemoryError" in r.error for r in results if not r.ok)


@pytest.mark.parametrize("where", ["check", "worker"])
def test_a_plugin_whose_import_kills_or_hangs_fails_its_items_not_the_pool(tmp_path, monkeypatch, where):
    """Tried once: its items are errors naming why, and other rewards are scored as before. The scorer
    first loads a plugin in a bounded child process ("check"); a plugin that gets past that and only
    then kills or hangs a worker ("worker") is stopped by the pool."""
    import rewards.registry

    monkeypatch.setattr(rewards.registry, "LOAD_LIMIT_S", 1.0)
    crashes, hangs = tmp_path / "crashes.py", tmp_path / "hangs.py"
    loads = tmp_path / "loads.txt"  # one line per load of either plugin, with the loading process's pid
    in_worker = "'_load_and_report' not in [f.function for f in inspect.stack()]" if where == "worker" else "True"
    header = (f"import inspect, os, sys, time\nopen({str(loads)!r}, 'a').write(f'{{__file__}} {{os.getpid()}}\\n')\n"
              f"if {in_worker}:\n")
    plugin_file(crashes, header + "    os._exit(3)")
    plugin_file(hangs, header + "    time.sleep(600)")
    why = {"check": ("ended the process that loaded it (exit code 3)", "took more than 1 s (tried in a separate process"),
           "worker": ("crashed its worker process while loading the plugin (exit code 3)", "took more than 1 s to load")}
    with RewardScorer(workers=2) as scorer:
        for plugin, message in zip((crashes, hangs), why[where]):
            items = [{"response": "x", "ground_truth": "x", "reward": f"{plugin}:score"}] * 6
            started = time.monotonic()
            results = _within(60, lambda: scorer.score(items, "math", timeout=5.0))
            assert all(r.status in ("error", "timeout") and message in r.error for r in results), results[0].error
            assert time.monotonic() - started < 20
            pids = [int(line.split()[1]) for line in loads.read_text().splitlines() if line.split()[0] == str(plugin)]
            assert 1 <= len(pids) <= (1 if where == "check" else 3)  # the check, then once per worker at most
            assert os.getpid() not in pids  # never in this process
        assert scorer.score(toy_items(4), "math", timeout=5.0).summary.ok == 4  # the pool still works


def test_a_memory_error_on_the_last_item_of_a_chunk_retires_the_worker_too(tmp_path):
    plugin = tmp_path / "leaky_last.py"
    plugin.write_text("_cache = []\n\ndef score(response, ground_truth, *, extra_info):\n"
                      "    _cache.append(bytearray(120 * 2**20))\n    return 1.0\n")
    with RewardScorer(workers=1, memory_mb=300) as scorer:
        marks = ""
        for _ in range(4):  # one item per call: each is the last of its chunk; the third outgrows the cap
            results = _within(60, lambda: scorer.score([{"response": "x", "ground_truth": "x"}], f"{plugin}:score", timeout=5.0))
            marks += "." if results[0].ok else "E" if "MemoryError" in results[0].error else "?"
        assert marks == "..E."  # the worker with the grown cache retired; its replacement starts empty
        assert scorer.score(toy_items(4), "math", timeout=5.0).summary.ok == 4
