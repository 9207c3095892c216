"""The `format` and `iou` rewards and weighted compositions."""
import pytest

from rewards import compose, get_reward
from rewards.format import format_reward
from rewards.iou import iou, iou_reward, read_box
from rewards.registry import RewardError

FORMAT = [
    ("<think>1 + 2 = 3</think> <answer>3</answer>", 1.0),
    ("  <think>a</think>\n<answer>b</answer>\n", 1.0),
    ("<think>a</think><answer>b</answer>", 1.0),
    ("<think>a</think> <answer> </answer>", 0.0),  # empty answer
    ("<think> </think> <answer>3</answer>", 0.0),  # no reasoning
    ("<answer>3</answer>", 0.0),
    ("1 + 2 = 3</think> <answer>3</answer>", 1.0),  # the rest of an answer an R1-style template opened with <think>
    ("</think> <answer>3</answer>", 0.0), ("3 <answer>3</answer>", 0.0),  # no reasoning; no think block at all
    ("<think>a</think>", 0.0),
    ("<answer>3</answer> <think>a</think>", 0.0),  # wrong order
    ("intro <think>a</think> <answer>3</answer>", 0.0),  # text before
    ("<think>a</think> so <answer>3</answer>", 0.0),  # text between
    ("<think>a</think> <answer>3</answer> and more", 0.0),  # text after
    ("<think>a</think> <answer>3</answer><answer>4</answer>", 0.0),
    ("<think>a <think>b</think> <answer>3</answer>", 0.0),  # nested/stray tag
    ("<think>a</think> <answer>3 </answer> </answer>", 0.0),
    ("<think>a</think> <answer>3", 0.0),
    ("", 0.0),
]


@pytest.mark.parametrize("response,expected", FORMAT)
def test_format(response, expected):
    assert format_reward(response, "3", extra_info={}) == expected


IOU = [
    ("<answer>[0, 0, 10, 10]</answer>", "[0, 0, 10, 10]", {}, 1.0),
    ("<answer>[0, 0, 10, 10]</answer>", "[0, 0, 10, 20]", {}, 0.5),
    ("<answer>[0, 0, 10, 10]</answer>", "[20, 20, 30, 30]", {}, 0.0),
    ("<answer>(0.0, 0.0, 0.5, 0.5)</answer>", "[0, 0, 0.5, 0.5]", {}, 1.0),
    ('<answer>{"bbox_2d": [0, 0, 10, 10], "label": "cat"}</answer>', "[0, 0, 10, 10]", {}, 1.0),
    ("<answer>[0, 0, 10, 10] or [5, 5, 10, 10]</answer>", "[0, 0, 10, 10]", {}, 0.0),  # two boxes: hedge
    ("<answer>[0, 0, 10, 10]</answer><answer>[1, 1, 9, 9]</answer>", "[0, 0, 10, 10]", {}, 0.0),
    ("<answer>[10, 10, 0, 0]</answer>", "[0, 0, 10, 10]", {}, 0.0),  # not a box
    ("<answer>the cat</answer>", "[0, 0, 10, 10]", {}, 0.0),
    ("no answer", "[0, 0, 10, 10]", {}, 0.0),
    ("<answer>[0, 0, 10, 10]</answer>", "[0, 0, 10, 20]", {"iou_threshold": 0.5}, 1.0),
    ("<answer>[0, 0, 10, 10]</answer>", "[0, 0, 10, 20]", {"iou_threshold": 0.75}, 0.0),
    ("<answer>[0, 0, 10, 10]</answer>", "[0, 0, 10, 20]", {"iou_threshold": "0.5"}, 1.0),
]


@pytest.mark.parametrize("response,truth,extra,expected", IOU)
def test_iou(response, truth, extra, expected):
    assert iou_reward(response, truth, extra_info=extra) == pytest.approx(expected)


def test_iou_geometry():
    assert iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert read_box([1, 2, 3, 4]) == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize("truth,extra", [("not a box", {}), ("[0, 0, 1, 1]", {"iou_threshold": 1.5})])
def test_iou_bad_truth_or_threshold_raises(truth, extra):
    with pytest.raises(ValueError):
        iou_reward("<answer>[0, 0, 1, 1]</answer>", truth, extra_info=extra)


GOOD = "<think>1 + 2 = 3</think> <answer>3</answer>"


def test_composition_string_returns_parts():
    reward = get_reward("0.9*math+0.1*format")
    assert reward(GOOD, "3", extra_info={}) == {"score": pytest.approx(1.0), "math": 1.0, "format": 1.0}
    assert reward("<answer>3</answer>", "3", extra_info={}) == {"score": pytest.approx(0.9), "math": 1.0, "format": 0.0}
    assert reward(GOOD, "4", extra_info={})["score"] == pytest.approx(0.1)


def test_composition_factory_and_spellings_agree():
    by_factory = compose({"math": 0.9, "format": 0.1})
    for spec in ("0.9*math+0.1*format", " 0.9 * math + 0.1 * format ", "9e-1*math+1e-1*format"):
        assert get_reward(spec)("<answer>3</answer>", "3", extra_info={}) == by_factory(
            "<answer>3</answer>", "3", extra_info={})


def test_a_perfect_answer_scores_exactly_one_whatever_the_weights():
    """`reward.correct_at: 1.0` counts a response right at a score of 1: adding 0.7 + 0.2 + 0.1 left to right
    gives 0.9999999999999999, which would count every perfect answer wrong."""
    perfect = "<think>a</think> <answer>[0, 0, 1, 1]</answer>"
    for spec in ("0.7*math+0.2*format+0.1*iou", "0.1*iou+0.2*format+0.7*math", "0.6*math+0.3*format+0.1*iou"):
        assert get_reward(spec)(perfect, "[0, 0, 1, 1]", extra_info={})["score"] == 1.0, spec


def test_composition_weight_one_and_single_weighted_term():
    assert get_reward("math+format")(GOOD, "3", extra_info={})["score"] == 2.0
    assert get_reward("0.5*math")(GOOD, "3", extra_info={}) == {"score": 0.5, "math": 1.0}


def test_nested_components_are_prefixed():
    outer = compose({"0.9*math+0.1*format": 0.5, "iou": 0.5}, name="mixed")
    scores = outer("<think>a</think> <answer>[0, 0, 1, 1]</answer>", "[0, 0, 1, 1]", extra_info={})
    assert scores["iou"] == 1.0 and scores["0.9*math+0.1*format.format"] == 1.0


@pytest.mark.parametrize("spec", ["0.9*mth+0.1*format", "0.9*math+", "x*math", "-1*math", "math+math", "0.9**math"])
def test_bad_compositions_are_errors(spec):
    with pytest.raises(RewardError):
        get_reward(spec)


@pytest.mark.parametrize("weights", [{}, {"math": -1}, {"math": float("nan")}, {"math": True}, {"nope": 1.0}])
def test_bad_factory_arguments(weights):
    with pytest.raises((ValueError, RewardError)):
        compose(weights)


@pytest.mark.parametrize("spec, message", [
    ("{plugin}:score+./{plugin}:score", "names a part twice"),  # one file, spelt two ways
    ("1e400*math", r"weight 1e400 is not a finite number"),
    ("math-0.1*format", r"write terms like '0.9\*math\+0.1\*format' \(weights are numbers >= 0: there is no '-'\)"),
    ("-0.2*format+math", r"there is no '-'"),
    ("{plugin}", r"names a file but no function in it: write .*mine.py:FUNCTION"),
])
@pytest.mark.parametrize("load", ["check_reward", "get_reward"])
def test_a_composition_that_could_never_score_is_refused_when_it_is_checked(tmp_path, monkeypatch, spec, message, load):
    """What would fail on every item is an error before the first one, saying what to write instead."""
    import rewards.registry

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text("def score(response, ground_truth, *, extra_info):\n    return 1.0\n")
    with pytest.raises(RewardError, match=message):
        getattr(rewards.registry, load)(spec.format(plugin="mine.py"))
