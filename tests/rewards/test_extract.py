"""Answer extraction: where the final answer is, and when there is none or several."""
import time

import pytest

from rewards.extract import boxed_contents, extract_answer, strip_thinking, top_level_parts

CASES = [
    # (response, answer, hedged)
    ("<think>1 + 2 = 3</think> <answer>3</answer>", "3", False),
    ("<answer> 3 </answer>", "3", False),
    ("blah \\boxed{7} blah", "7", False),
    ("\\boxed{\\frac{1}{2}} and so", "\\frac{1}{2}", False),
    ("\\boxed {5}", "5", False),
    ("\\fbox{5}", "5", False),
    ("<answer>\\boxed{4}</answer>", "4", False),  # a \boxed{} inside the answer tag is the answer
    ("\\boxed{9} <answer>4</answer>", "4", False),  # the tag wins over a box outside it
    ("<answer>\\{1, 2\\}</answer>", "\\{1, 2\\}", False),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}", False),
    ("<answer>3</answer> text <answer>3</answer>", "3", False),  # repeated, not different
    ("<answer>3</answer> <answer>4</answer>", "4", True),
    ("\\boxed{3} and \\boxed{4}", "4", True),
    ("<answer>\\boxed{3} or \\boxed{4}</answer>", "4", True),
    ("<answer>\\boxed{3}</answer><answer>4</answer>", "4", True),
    ("<think><answer>3</answer></think>", None, False),  # only inside thinking: missing
    ("<think>\\boxed{3}</think> so I am done", None, False),
    ("<think>unclosed reasoning <answer>3</answer>", None, False),  # an unclosed think hides the rest
    ("<answer>3", None, False),  # truncated: missing
    ("<answer></answer>", None, False),
    ("<answer>   </answer>", None, False),
    ("no answer at all", None, False),
    ("", None, False),
    ("\\boxed{unbalanced", None, False),
    ("<answer>a <answer>b</answer>", "b", False),
]


def test_a_hedge_keeps_every_final_answer_once_in_the_order_written():
    assert extract_answer("<answer>4</answer> <answer> 3 </answer> <answer>\\boxed{2} so \\boxed{3}</answer>").answers == (
        "4", "3", "2")  # earlier tags' answers, then the last tag's boxes
    assert extract_answer("\\boxed{3} \\boxed{4} \\boxed{3}").answers == ("3", "4")
    assert extract_answer("\\boxed{3} \\boxed{ 3 }").answers == ()  # spacing apart, the same: no hedge
    assert extract_answer("\\boxed{} \\boxed{3}").hedged is False  # an empty box is no answer


@pytest.mark.parametrize("response,answer,hedged", CASES)
def test_extract_answer(response, answer, hedged):
    found = extract_answer(response)
    assert found.answer == answer
    assert found.hedged == hedged


def test_source_is_reported():
    assert extract_answer("<answer>1</answer>").source == "answer"
    assert extract_answer("\\boxed{1}").source == "boxed"
    assert extract_answer("1").source == "none"


def test_strip_thinking_keeps_text_between_blocks():
    assert strip_thinking("a<think>x</think>b<think>y</think>c") == "abc"


def test_nested_boxed_braces():
    assert boxed_contents("\\boxed{\\frac{a}{b^{2}}}") == ["\\frac{a}{b^{2}}"]


def test_a_box_inside_another_is_part_of_its_answer_and_an_answer_too():
    assert boxed_contents("\\boxed{x = \\boxed{3} or \\boxed{4}} so \\boxed{5}") == ["x = {3} or {4}", "3", "4", "5"]
    assert boxed_contents("\\boxed{4\\boxed{}} \\boxed{3}") == ["4{}", "3"]  # an empty box hides nothing
    assert boxed_contents("\\boxed{x\\boxed{y\\boxed{3}}}") == ["x{y{3}}", "3"]  # the innermost: no copy per level
    assert extract_answer("\\boxed{-\\boxed{3}}").answers == ("-{3}", "3")
    assert boxed_contents("\\boxed{ \\boxed{ \\fbox{3} } }") == ["3"]  # a box wholly boxed again is unwrapped
    assert extract_answer("\\boxed{\\boxed{3}}") == extract_answer("\\boxed{3}")


def test_a_deep_nest_of_boxes_costs_linear_memory():
    nest = "\\boxed{" * 150_000 + "3" + "}" * 150_000  # 1.2 MB; every box's text copied would be ~90 GB
    assert extract_answer(nest).answer == "3"


@pytest.mark.parametrize("text,parts", [
    ("3 or 4", ["3", "4"]),
    ("3, 4; 5", ["3", "4", "5"]),
    ("1,000", ["1,000"]),
    ("1,000,000.5", ["1,000,000.5"]),
    ("(1, 2)", ["(1, 2)"]),
    ("\\{1,2\\}", ["\\{1,2\\}"]),
    ("x \\lor y", ["x", "y"]),
    ("color", ["color"]),  # "or" inside a word is not a hedge
])
def test_top_level_parts(text, parts):
    assert top_level_parts(text) == parts


def test_extraction_is_linear_on_long_garbage():
    garbage = "<answer> </think> \\boxed{ {{{{ <think " * 20_000 + "\\boxed{"  # ~700 kB of near-misses
    started = time.perf_counter()
    for _ in range(10):
        assert extract_answer(garbage).answer is None
    assert time.perf_counter() - started < 3.0  # ~0.3 s here; a quadratic scan would take minutes
