"""Reward plugins that misbehave, loaded by path ("tests/openvlt/plugins.py:raises") in stage tests."""
import time


def raises(response: str, ground_truth: str, *, extra_info: dict) -> float:
    raise RuntimeError("boom")


def raises_on_unclear(response: str, ground_truth: str, *, extra_info: dict) -> float:
    """Checks the `<answer>` exactly, but fails on the answer "unclear" (a plugin that breaks on some outputs)."""
    answer = response.rsplit("<answer>", 1)[-1].split("</answer>", 1)[0].strip()
    if answer == "unclear":
        raise RuntimeError("cannot judge this one")
    return float(answer == ground_truth.strip())


def hangs(response: str, ground_truth: str, *, extra_info: dict) -> float:
    time.sleep(3600)
    return 1.0


def digit_share(response: str, ground_truth: str, *, extra_info: dict) -> float:
    """A dense reward any policy can climb: the share of its characters that are digits."""
    chars = [c for c in response if not c.isspace()]
    return sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0


def lenient(response: str, ground_truth: str, *, extra_info: dict) -> float:
    """Every non-empty response is right: lets a loop test exercise all stages with an untrained model."""
    return 1.0 if response.strip() else 0.0


def lenient_half(response: str, ground_truth: str, *, extra_info: dict) -> float:
    """Like `lenient`, but rejects about half of the responses (by a hash of the text, so deterministically):
    lets a loop test see problems with no accepted trace, and the retries that follow."""
    import hashlib

    return 1.0 if response.strip() and hashlib.sha256(response.encode()).digest()[0] % 2 == 0 else 0.0


def raises_on_half(response: str, ground_truth: str, *, extra_info: dict) -> float:
    """Every response is right, but about half of them (by a hash of the text) make it raise."""
    import hashlib

    if hashlib.sha256(response.encode()).digest()[0] % 2:
        raise RuntimeError("cannot judge this one")
    return 1.0


def verl_form_lenient_half(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> float:
    """`lenient_half` written as verl's custom_reward_function is, for the toy world's rows only: a run judging
    with it shows every stage passing each row's data source."""
    if data_source != "toyworld":
        raise ValueError(f"expected the row's data source 'toyworld', got {data_source!r}")
    return lenient_half(solution_str, ground_truth, extra_info=extra_info or {})


def right_and_brief(response: str, ground_truth: str, *, extra_info: dict) -> float:
    """The `<answer>` checked exactly, and only in a response of at most 10 words: a stricter reward than the
    one that accepted a long trace in an earlier iteration."""
    answer = response.rsplit("<answer>", 1)[-1].split("</answer>", 1)[0].strip()
    return float(answer == ground_truth.strip() and len(response.split()) <= 10)
