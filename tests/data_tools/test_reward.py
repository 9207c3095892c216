"""The toy-world reward: right answer and every claim about the grid true; found as an entry point."""
import random

import pytest

from data_tools.toyworld.captioner import write_caption
from data_tools.toyworld.dataset import DEFAULT_KINDS, scene_code
from data_tools.toyworld.questions import sample_problem
from data_tools.toyworld.reasoner import write_trace
from rewards import get_reward, score_batch


def teacher_traces(n: int, error_rate: float):
    rng = random.Random(21)
    for _ in range(n):
        scene, question, answer = sample_problem(rng, 3, DEFAULT_KINDS, 0.2)
        trace = write_trace(write_caption(scene, rng) + " " + question.text(), rng, error_rate)
        extra = {"scene": scene_code(scene), "kind": question.kind, "targets": [" ".join(w for w in t if w) for t in question.targets],
                 **({"choices": list(question.choices)} if question.choices else {})}
        yield trace, answer, extra


def test_found_by_name_through_the_entry_point_group():
    reward = get_reward("toyworld")
    assert reward.__module__ == "data_tools.toyworld.reward"


def test_faithful_right_traces_pass_and_every_injected_mistake_fails():
    """Including slips that land on the right option letter by luck: `math` accepts those."""
    reward, math = get_reward("toyworld"), get_reward("math")
    lucky = 0
    for trace, answer, extra in teacher_traces(1500, error_rate=0.5):
        out = reward(trace.text, answer, extra_info=extra)
        if trace.mistake is None:
            assert out == {"score": 1.0, "answer": 1.0, "faithful": 1.0}, trace.text
        else:
            assert out["score"] == 0.0 and (out["faithful"] == 0.0 or out["answer"] == 0.0), trace.text
            lucky += math(trace.text, answer, extra_info=extra) == 1.0
    assert lucky > 0  # the teacher does make mistakes that `math` cannot see


@pytest.mark.parametrize("change", [
    ("blue square no", "blue circle no"),          # a cell that is not there
    ("blue square no", "blue square yes"),         # a wrong mark for the probe
    ("red square yes (1)", "red square yes (2)"),  # a row count that disagrees with its marks
    ("Row 3: empty cell no, empty cell no, empty cell no (0).", "Row 3: empty cell no, empty cell no (0)."),
    ("1 + 1 + 0 = 2", "1 + 0 + 1 = 2"),            # a total that does not add up the listed rows
    ("Red shapes: red?", "Blue shapes: red?"),     # a pass announced as counting something else
    ("Red shapes: red?", "Red shapes: blue?"),     # a pass over the wrong target
])
def test_each_kind_of_false_claim_is_caught(change):
    trace = ("<think>Red shapes: red? Row 1: red circle yes, empty cell no, blue square no (1). Row 2: empty cell no, "
             "empty cell no, red square yes (1). Row 3: empty cell no, empty cell no, empty cell no (0). 1 + 1 + 0 = 2."
             "</think> <answer>2</answer>")
    extra = {"scene": "red circle,-,blue square;-,-,red square;-,-,-", "targets": ["red"]}
    reward = get_reward("toyworld")
    assert reward(trace, "2", extra_info=extra)["score"] == 1.0
    assert reward(trace.replace(*change), "2", extra_info=extra) == {"score": 0.0, "answer": 1.0, "faithful": 0.0}
    assert reward("<think>just guessing</think> <answer>2</answer>", "2", extra_info=extra)["score"] == 0.0  # no pass
    assert reward("<think>just guessing</think> <answer>2</answer>", "2", extra_info={"scene": extra["scene"]})["score"] == 1.0


def test_a_matching_cell_left_unmarked_is_a_false_count_even_when_the_answer_comes_out_right():
    """Both passes leave a matching cell unmarked and count one less: both totals are wrong, their difference
    is right, and every written mark and count agreed with each other."""
    row3 = "Row 3: empty cell no, empty cell no, empty cell no (0)."
    red = ("Red shapes: red? Row 1: red circle yes, blue square no, empty cell no (1). Row 2: red square yes, blue circle "
           f"no, empty cell no (1). {row3} 1 + 1 + 0 = 2.")
    blue = ("Blue shapes: blue? Row 1: red circle no, blue square yes, empty cell no (1). Row 2: red square no, blue "
            f"circle yes, empty cell no (1). {row3} 1 + 1 + 0 = 2.")
    extra = {"scene": "red circle,blue square,-;red square,blue circle,-;-,-,-", "targets": ["red", "blue"], "kind": "more_than"}
    reward = get_reward("toyworld")
    assert reward(f"<think>{red} {blue} 2 - 2 = 0.</think> <answer>0</answer>", "0", extra_info=extra)["score"] == 1.0
    red = red.replace("red circle yes, blue square no, empty cell no (1)", "red circle, blue square no, empty cell no (0)")
    blue = blue.replace("red circle no, blue square yes, empty cell no (1)", "red circle no, blue square, empty cell no (0)")
    red, blue = (text.replace("1 + 1 + 0 = 2", "0 + 1 + 0 = 1") for text in (red, blue))
    lowered = f"<think>{red} {blue} 1 - 1 = 0.</think> <answer>0</answer>"
    assert reward(lowered, "0", extra_info=extra) == {"score": 0.0, "answer": 1.0, "faithful": 0.0}


@pytest.mark.parametrize("opening", ["<think>\n", "", "<think> ", "  "])
def test_a_right_trace_passes_after_a_template_prefill_or_with_no_think_tag(opening):
    """A chat template that opens the answer itself ("<think>\n", DeepSeek-R1-Distill's) or a trainer that
    passes the generated text alone: the passes are still found, also when each starts a new line."""
    scene = "blue triangle,red triangle,-;yellow triangle,yellow triangle,red triangle;-,-,-"
    trace = (f"{opening}Triangles: triangle? Row 1: blue triangle yes, red triangle yes, empty cell no (2). Row 2: yellow "
             "triangle yes, yellow triangle yes, red triangle yes (3). Row 3: empty cell no, empty cell no, empty cell no "
             "(0). 2 + 3 + 0 = 5.\nRed squares: red square? Row 1: blue triangle no, red triangle no, empty cell no (0). "
             "Row 2: yellow triangle no, yellow triangle no, red triangle no (0). Row 3: empty cell no, empty cell no, "
             "empty cell no (0). 0 + 0 + 0 = 0.\n5 + 0 = 5.</think> <answer>5</answer>")
    extra = {"scene": scene, "targets": ["triangle", "red square"], "kind": "sum"}
    assert get_reward("toyworld")(trace, "5", extra_info=extra) == {"score": 1.0, "answer": 1.0, "faithful": 1.0}


def test_a_skipped_pass_fails_even_when_its_count_is_zero():
    """Seen in the iteration-1 student's own traces: "triangles plus red squares" answered with the
    triangle pass alone, right because there are no red squares."""
    scene = "blue triangle,red triangle,-;yellow triangle,yellow triangle,red triangle;-,-,-"
    one = ("Triangles: triangle? Row 1: blue triangle yes, red triangle yes, empty cell no (2). Row 2: yellow triangle "
           "yes, yellow triangle yes, red triangle yes (3). Row 3: empty cell no, empty cell no, empty cell no (0). "
           "2 + 3 + 0 = 5.")
    other = ("Red squares: red square? Row 1: blue triangle no, red triangle no, empty cell no (0). Row 2: yellow "
             "triangle no, yellow triangle no, red triangle no (0). Row 3: empty cell no, empty cell no, empty cell no "
             "(0). 0 + 0 + 0 = 0.")
    extra = {"scene": scene, "targets": ["triangle", "red square"]}
    reward = get_reward("toyworld")
    assert reward(f"<think>{one} {other} 5 + 0 = 5.</think> <answer>5</answer>", "5", extra_info=extra)["score"] == 1.0
    assert reward(f"<think>{one}</think> <answer>5</answer>", "5", extra_info=extra)["faithful"] == 0.0
    assert reward(f"<think>{other} {one} 0 + 5 = 5.</think> <answer>5</answer>", "5", extra_info=extra)["faithful"] == 0.0


def test_arithmetic_and_option_claims_are_checked():
    reward = get_reward("toyworld")
    extra = {"scene": "red circle,-,-;-,-,-;-,-,-", "choices": ["3", "1", "0", "2"]}
    for a, b, c, d in (("A", "B", "C", "D"), ("(A)", "(B)", "(C)", "(D)")):  # the older wording; as the question writes them
        good = f"<think>4 - 3 = 1. Options: {a} 3 no, {b} 1 yes, {c} 0 no, {d} 2 no. So (B).</think> <answer>B</answer>"
        assert reward(good, "B", extra_info=extra)["score"] == 1.0
        for bad in (good.replace("4 - 3 = 1", "4 - 3 = 2"),                 # wrong arithmetic, right letter
                    good.replace(f"{a} 3 no", f"{a} 5 no"),                 # misquoted option
                    good.replace(f"{c} 0 no", f"{c} 0 yes"),                # a check that contradicts the value
                    good.replace(f"{b} 1 yes, {c} 0", f"{c} 1 yes, {b} 0")):  # options out of order
            assert reward(bad, "B", extra_info=extra) == {"score": 0.0, "answer": 1.0, "faithful": 0.0}
    retracted = "<think>3 + 4 = 8. Wait, 3 + 4 is 7, not 8. 3 + 4 = 7.</think> <answer>7</answer>"
    assert reward(retracted, "7", extra_info={"scene": extra["scene"]})["score"] == 1.0


TWO_COUNTS = ("<think>Red shapes: red? Row 1: red circle yes, empty cell no, blue square no (1). Row 2: empty cell no, "
              "empty cell no, red square yes (1). Row 3: red triangle yes, empty cell no, blue circle no (1). 1 + 1 + 1 = 3. "
              "Blue shapes: blue? Row 1: red circle no, empty cell no, blue square yes (1). Row 2: empty cell no, empty cell no, "
              "red square no (0). Row 3: red triangle no, empty cell no, blue circle yes (1). 1 + 0 + 1 = 2. 3 - 2 = 1."
              "</think> <answer>1</answer>")


@pytest.mark.parametrize("change", [
    (" Row 3: red triangle yes, empty cell no, blue circle no (1). 1 + 1 + 1 = 3.", " 1 + 1 = 2."),  # a row left out:
    (" Row 3: red triangle no, empty cell no, blue circle yes (1). 1 + 0 + 1 = 2.", " 1 + 0 = 1."),  # 2 - 1 is still 1
    ("3 - 2 = 1.", "5 - 4 = 1."),                                        # the answer not computed from the counts
    ("3 - 2 = 1.", "3 + -2 = 1."),                                       # (not even an equation of them)
    ("3 - 2 = 1.", "2 - 1 = 1."),
    ("3 - 2 = 1.", "3 - 2 = 2. Wait, 3 - 2 is 5, not 2. 3 - 2 = 1."),    # a correction to a wrong value
    ("3 - 2 = 1.", "Wait, 3 - 2 is 1, not 4. 3 - 2 = 4. 3 - 2 = 1."),    # a retraction excuses the equation before it only
    ("3 - 2 = 1.", "3 - 2 = 1. 1 + 1 = 2."),                             # something else computed after the counts
])
def test_the_counts_are_complete_and_combined_as_the_question_asks(change):
    """A pass over some rows only, or a combining step whose operands are not the totals, can land on the
    right answer by luck; so can a retraction that "corrects" the wrong equation."""
    extra = {"scene": "red circle,-,blue square;-,-,red square;red triangle,-,blue circle", "targets": ["red", "blue"],
             "kind": "difference"}
    reward = get_reward("toyworld")
    assert reward(TWO_COUNTS, "1", extra_info=extra)["score"] == 1.0
    slip = TWO_COUNTS.replace("3 - 2 = 1.", "3 - 2 = 2. Wait, 3 - 2 is 1, not 2. 3 - 2 = 1.")  # the teacher's caught slip
    assert reward(slip, "1", extra_info=extra)["score"] == 1.0
    assert reward(TWO_COUNTS.replace(*change), "1", extra_info=extra) == {"score": 0.0, "answer": 1.0, "faithful": 0.0}
    summed = TWO_COUNTS.replace("3 - 2 = 1.", "3 + 2 = 5.").replace("<answer>1", "<answer>5")  # + for "how many more"
    assert reward(summed, "5", extra_info={**extra, "kind": "sum"})["score"] == 1.0
    assert reward(summed, "5", extra_info=extra)["score"] == 0.0


def test_runs_in_the_worker_pool_and_misuse_is_an_error_not_a_zero():
    items = [{"response": t.text, "ground_truth": a, "extra_info": e} for t, a, e in teacher_traces(20, 0.0)]
    items.append({"response": "<answer>1</answer>", "ground_truth": "1", "extra_info": {}})  # no scene
    results = score_batch(items, "toyworld", workers=1)
    assert [r.score for r in results[:20]] == [1.0] * 20
    assert results[20].status == "error" and "needs extra_info['scene']" in results[20].error


def test_garbled_model_output_is_judged_never_raises():
    """What a half-trained student writes: misplaced operators, huge numbers, cut-off rows, shuffled teacher words."""
    reward = get_reward("toyworld")
    extra = {"scene": "red circle,-,blue square;-,-,red square;-,-,-", "choices": ["3", "1", "0", "2"]}
    garbled = [
        "<think>red? Row 1: red circle yes, empty cell no, blue square no (1). 0 - 1 = 3.</think> <answer>3</answer>",
        "<think>Row 1: red circle yes (1). Row 2: red square yes (1). 8 - 3 = 5.</think> <answer>5</answer>",
        "<think>" + "9" * 5000 + " + 1 = " + "9" * 5000 + ". Row " + "7" * 5000 + ": (" + "1" * 5000 + ")</think>",
        "<think>Row 0: (0). Row 99: red (1). A 99999999999 yes</think> <answer>A</answer>",
    ]
    rng = random.Random(3)
    words = [w for t, _, _ in teacher_traces(30, 0.5) for w in t.text.split()]
    garbled += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 120))) for _ in range(300)]
    for text in garbled:
        out = reward(text, "2", extra_info=extra)
        assert out["score"] in (0.0, 1.0) and out["faithful"] in (0.0, 1.0), text
    assert reward(garbled[1], "5", extra_info={"scene": extra["scene"]})["faithful"] == 0.0  # "8 - 3" is not a sum of the row counts


@pytest.mark.parametrize("tail", [
    "a" * 20_000, "Row 1: " * 20_000, "red? Row " * 20_000,
    " Row 1: red circle yes, empty cell no, blue square no (1)." * 5_000,  # well-formed rows, many
], ids=lambda t: t[:12])
def test_a_long_trace_costs_linear_time(tail):
    """A student that repeats itself up to its token limit: each took 5 to 60 s when the row and probe
    patterns rescanned the trace for every row. The bound is a hang guard, far above the milliseconds it takes."""
    import time

    trace = ("<think>Red shapes: red? Row 1: red circle yes, empty cell no, blue square no (1). Row 2: empty cell no, "
             "empty cell no, red square yes (1). Row 3: empty cell no, empty cell no, empty cell no (0). 1 + 1 + 0 = 2.")
    started = time.perf_counter()
    out = get_reward("toyworld")(trace + tail + "</think> <answer>2</answer>", "2",
                                 extra_info={"scene": "red circle,-,blue square;-,-,red square;-,-,-", "targets": ["red"]})
    assert out["answer"] == 1.0 and time.perf_counter() - started < 20
