"""Adapters, each called exactly the way its framework calls it."""
import os

import numpy as np
import pytest
import torch

from rewards.adapters.easyr1 import REWARD_TYPE, compute_score as easyr1_compute_score
from rewards.adapters.trl import trl_reward
from rewards.registry import RewardError

RESPONSES = [
    "<think>Row 1: red circle, empty. 1 + 2 = 3.</think> <answer>3</answer>",  # right, well formed
    "<answer>3</answer>",  # right, badly formed
    "<think>Counting gives 3.</think> <answer>3</answer>",  # multiple choice, right only if the choices arrive (C is 3)
    "<think>hmm</think> <answer>4</answer>",  # wrong
]
TRUTHS = ["3", "3", "C", "3"]
EXTRAS = [{"reward": "0.9*math+0.1*format"}, {"reward": "0.9*math+0.1*format"},
          {"reward": "0.9*math+0.1*format", "choices": ["2", "4", "3", "5"]}, {"reward": "0.9*math+0.1*format"}]
EXPECTED = [1.0, 0.9, 1.0, 0.1]


# ---- verl -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tiny byte-level BPE tokenizer saved like a model's, built offline in well under a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(RESPONSES * 4, trainer)
    path = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>").save_pretrained(path)
    return str(path)


def rollout_batch(tokenizer, responses, truths, extras, data_source="toyworld"):
    """A DataProto shaped like verl's rollout output: left-padded prompts, right-padded responses."""
    from verl import DataProto

    prompt_len, response_len = 6, 48
    n = len(responses)
    prompts = torch.full((n, prompt_len), tokenizer.pad_token_id)
    response_ids = torch.full((n, response_len), tokenizer.pad_token_id)
    mask = torch.zeros(n, prompt_len + response_len, dtype=torch.long)
    for i, text in enumerate(responses):
        prompt = tokenizer("how many?")["input_ids"][-prompt_len:]
        ids = tokenizer(text)["input_ids"]
        assert len(ids) <= response_len
        prompts[i, prompt_len - len(prompt):] = torch.tensor(prompt)
        response_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, prompt_len - len(prompt): prompt_len + len(ids)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": response_ids, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, response_ids], dim=1)},
        non_tensors={"data_source": np.array([data_source] * n, dtype=object),
                     "reward_model": np.array([{"ground_truth": t} for t in truths], dtype=object),
                     "extra_info": np.array([dict(e) for e in extras], dtype=object)},
    )


def verl_config(tokenizer_dir, **reward_kwargs):
    """verl 0.9.1's own generated PPO trainer config, with our adapter as custom_reward_function."""
    import verl.trainer.config
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop import migrate_legacy_reward_impl

    config = OmegaConf.load(os.path.join(os.path.dirname(verl.trainer.config.__file__), "_generated_ppo_trainer.yaml"))
    config.actor_rollout_ref.model.path = tokenizer_dir
    config.reward.custom_reward_function.path = "pkg://rewards.adapters.verl"
    config.reward.custom_reward_function.name = "compute_score"
    config.reward.custom_reward_function.reward_kwargs = reward_kwargs
    return migrate_legacy_reward_impl(config)


def test_verl_reward_loop_worker(tokenizer_dir):
    """verl 0.9.1's trainer path: RewardLoopWorker -> NaiveRewardManager.run_single, in executor threads."""
    from verl.experimental.reward_loop import RewardLoopWorker

    worker = RewardLoopWorker(verl_config(tokenizer_dir, timeout=10.0))
    data = rollout_batch(worker.input_tokenizer, RESPONSES, TRUTHS, EXTRAS)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))
    assert [o["reward_score"] for o in outputs] == pytest.approx(EXPECTED)
    assert [o["reward_extra_info"]["math"] for o in outputs] == [1.0, 1.0, 1.0, 0.0]
    assert [o["reward_extra_info"]["reward_failed"] for o in outputs] == [0.0] * 4
    assert len({frozenset(o["reward_extra_info"]) for o in outputs}) == 1  # verl needs the same keys


def test_verl_legacy_naive_reward_manager_and_defaults(tokenizer_dir):
    """The legacy driver-side manager, with the reward taken from reward_kwargs or the data source."""
    from transformers import AutoTokenizer
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager import NaiveRewardManager

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    manager = NaiveRewardManager(tokenizer, num_examine=0,
                                 compute_score=get_custom_reward_fn(verl_config(tokenizer_dir, reward="math")))
    plain = [{k: v for k, v in e.items() if k != "reward"} for e in EXTRAS]
    out = manager(rollout_batch(tokenizer, RESPONSES, TRUTHS, plain), return_dict=True)
    assert out["reward_tensor"].sum(dim=1).tolist() == [1.0, 1.0, 1.0, 0.0]
    assert out["reward_extra_info"]["reward_failed"] == [0.0] * 4

    by_source = NaiveRewardManager(tokenizer, num_examine=0,
                                   compute_score=get_custom_reward_fn(verl_config(tokenizer_dir)))
    tensor = by_source(rollout_batch(tokenizer, RESPONSES, TRUTHS, plain, data_source="format"))
    assert tensor.sum(dim=1).tolist() == [1.0, 0.0, 1.0, 1.0]


def test_verl_failures_are_flagged_not_silent():
    from rewards.adapters.verl import compute_score

    from tests.rewards import reward_plugins_for_tests  # noqa: F401

    failed = compute_score("x", "hang", "", {"reward": "test_misbehave"}, timeout=0.5)
    assert failed == {"score": 0.0, "reward_failed": 1.0}
    with pytest.raises(RuntimeError, match="timed out"):
        compute_score("x", "hang", "", {"reward": "test_misbehave"}, timeout=0.5, on_error="raise")
    with pytest.raises(RewardError, match="no reward for data source 'unknown_source'"):
        compute_score("unknown_source", "<answer>3</answer>", "3", {})
    assert compute_score("x", RESPONSES[0], "3", {"reward": "0.9*math+0.1*format"}, components=False) == {
        "score": 1.0, "reward_failed": 0.0}


def test_a_failed_item_has_the_keys_of_a_judged_one_of_the_same_reward():
    """verl's reward loop reads every item's dict with the keys of the first: a timed-out rollout
    that dropped `math` and `format` crashed the step."""
    from rewards.adapters.verl import compute_score

    from tests.rewards import reward_plugins_for_tests  # noqa: F401

    composition = "0.5*test_misbehave+0.5*format"  # parts known before any item is judged
    failed = compute_score("x", "hang", "", {"reward": composition}, timeout=0.5)
    judged = compute_score("x", "<think>a</think> <answer>1</answer>", "", {"reward": composition}, timeout=5)
    assert list(failed) == list(judged) == ["score", "test_misbehave", "format", "reward_failed"]
    assert failed == {"score": 0.0, "test_misbehave": 0.0, "format": 0.0, "reward_failed": 1.0}
    reward_inputs = [{"response": "hang", "response_length": 4, "ground_truth": "", "reward": composition},
                     {"response": "x", "response_length": 1, "ground_truth": "", "reward": composition}]
    first, second = easyr1_compute_score(reward_inputs, timeout=0.5, workers=1)
    assert list(first) == list(second) and first["reward_failed"] == 1.0 and second["reward_failed"] == 0.0


def test_verl_keys_never_depend_on_the_item_or_on_what_the_process_judged_before(caplog):
    """verl takes every item's keys from the first one, across several reward worker processes: a
    plugin's own components, which differ between a failed item, a short and a long response (and
    were learned per process), crashed the training step."""
    from rewards.adapters.verl import compute_score
    from rewards.registry import RewardError

    from tests.rewards import reward_plugins_for_tests  # noqa: F401

    responses = ["raise", "3", "a long response: 3"]  # failed first, as in a fresh reward worker
    by_default = [compute_score("x", r, "3", {"reward": "test_parts"}, workers=0) for r in responses]
    assert [list(s) for s in by_default] == [["score", "reward_failed"]] * 3
    assert [s["reward_failed"] for s in by_default] == [1.0, 0.0, 0.0]
    for components in (["acc", "length_penalty"], "acc, length_penalty"):  # a Hydra list, or one string
        named = [compute_score("x", r, "3", {"reward": "test_parts"}, workers=0, components=components)
                 for r in responses]
        assert [list(s) for s in named] == [["score", "acc", "length_penalty", "reward_failed"]] * 3
        assert named == [{"score": 0.0, "acc": 0.0, "length_penalty": 0.0, "reward_failed": 1.0},
                         {"score": 1.0, "acc": 1.0, "length_penalty": 0.0, "reward_failed": 0.0},
                         {"score": 0.0, "acc": 0.0, "length_penalty": -0.1, "reward_failed": 0.0}]
    with pytest.raises(RewardError, match="not 'score' or 'reward_failed'"):
        compute_score("x", "3", "3", {"reward": "test_parts"}, workers=0, components=["acc", "score"])
    caplog.clear()
    for _ in range(2):
        compute_score("x", "3", "3", {"reward": "test_parts"}, workers=0, components=["acc", "accuracy"])
    typo = [r.getMessage() for r in caplog.records if "no component" in r.getMessage()]
    assert typo == ["reward 'test_parts' returned no component 'accuracy' (components= names it): it reads 0.0 "
                    "where it is missing"]


def test_verl_failures_name_their_row_and_are_counted_not_logged_each(caplog, monkeypatch):
    """In verl every call is a one-item batch: failures said "item 0", twice each, and a hanging plugin
    wrote a warning per rollout."""
    import rewards.adapters.verl as verl_adapter

    from tests.rewards import reward_plugins_for_tests  # noqa: F401

    monkeypatch.setattr(verl_adapter, "LOGGED_FAILURES", 2)
    monkeypatch.setattr(verl_adapter, "COUNT_EVERY", 3)
    monkeypatch.setattr(verl_adapter, "_failed", [0])
    monkeypatch.setattr(verl_adapter, "_scored", [0])
    caplog.set_level("WARNING")
    extras = [{"reward": "test_parts", "id": "p7"}, {"reward": "test_parts", "index": 12}, {"reward": "test_parts"}]
    for extra in extras * 2:
        verl_adapter.compute_score("geo3k", "raise", "3", extra, workers=0)
    verl_adapter.compute_score("geo3k", "3", "3", extras[0], workers=0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # 2 in full, then a count at every 3rd failure: 3 and 6 (the 7th item was judged)
    assert lines[0].startswith("scored 0.0 (reward_failed=1): reward 'test_parts' on item 0 (geo3k id p7) raised KeyError")
    assert "(geo3k index 12) raised KeyError" in lines[1]
    assert lines[2].startswith("3 of 3 items failed in this process so far, each scored 0.0 (reward_failed=1); "
                               "the latest: reward 'test_parts' on item 0 (geo3k) raised KeyError")
    assert lines[3].startswith("6 of 6 items failed")


def test_verl_a_data_source_naming_a_plugin_judged_by_the_default_is_said_once(caplog):
    """reward_kwargs.reward comes before the data source; a toy-world row judged by the default
    composition (not by its own plugin, which checks the reasoning) was silent."""
    from rewards.adapters.verl import compute_score

    caplog.set_level("WARNING")
    for _ in range(3):
        compute_score("format", "<answer>3</answer>", "3", {}, reward="0.9*math+0.1*format", workers=0)
    compute_score("geometry3k", "<answer>3</answer>", "3", {}, reward="0.9*math+0.1*format", workers=0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["rows of data source 'format' are judged with reward_kwargs.reward '0.9*math+0.1*format', "
                     "not with the plugin 'format' (a row's extra_info['reward'] chooses per row)"]


def test_verl_passes_the_row_data_source_on_to_a_verl_form_reward_it_names():
    """A row naming verl's own default_compute_score (or a user's verl reward file) in extra_info['reward']
    is judged by it through the bounded workers, with the row's data source picking the scorer."""
    from rewards.adapters.verl import compute_score

    extra = {"reward": "verl.utils.reward_score:default_compute_score"}
    assert compute_score("openai/gsm8k", "so #### 72", "72", extra, workers=1)["score"] == 1.0
    assert compute_score("openai/gsm8k", "so #### 71", "72", extra, workers=1)["score"] == 0.0
    failed = compute_score("nobody/knows", "so #### 72", "72", extra, workers=1)
    assert failed == {"score": 0.0, "reward_failed": 1.0}


def test_trl_and_easyr1_pass_each_rows_data_source_on_to_a_verl_form_reward():
    rows = ["so #### 72", "so #### 71"]
    trl = trl_reward("verl.utils.reward_score:default_compute_score", workers=1)
    assert trl(prompts=["q", "q"], completions=rows, answer=["72", "72"], data_source=["openai/gsm8k"] * 2) == [1.0, 0.0]
    inputs = [{"response": r, "response_length": 4, "ground_truth": "72", "data_source": "openai/gsm8k"} for r in rows]
    assert [s["overall"] for s in easyr1_compute_score(inputs, reward="verl.utils.reward_score:default_compute_score")] == [1.0, 0.0]


# ---- TRL ------------------------------------------------------------------------------------------


def test_trl_signature_with_standard_completions():
    reward_func = trl_reward("math", workers=1)
    assert reward_func.__name__ == "openvlt_math"
    rewards = reward_func(
        prompts=["How many red circles?"] * 4,
        completions=RESPONSES,
        completion_ids=[[1, 2, 3]] * 4,
        answer=TRUTHS,
        extra_info=[{}, {}, {"choices": ["2", "4", "3", "5"]}, {}],
        trainer_state=object(),  # TRL passes its TrainerState as a keyword too
    )
    assert rewards == [1.0, 1.0, 1.0, 0.0]


def test_trl_signature_with_conversational_completions_and_row_rewards():
    from tests.rewards import reward_plugins_for_tests  # noqa: F401

    completions = [
        [{"role": "assistant", "content": RESPONSES[0]}],
        [{"role": "assistant", "content": [{"type": "text", "text": RESPONSES[1]}]}],
        [{"role": "assistant", "content": "hang"}],
    ]
    reward_func = trl_reward("format", answer_column="solution", workers=1, timeout=0.5)
    rewards = reward_func(prompts=[[{"role": "user", "content": "q"}]] * 3, completions=completions,
                          completion_ids=[[1]] * 3, solution=["3", "3", ""],
                          reward=["format", "math", "test_misbehave"])
    assert rewards == [1.0, 1.0, None]  # a failed item is None (TRL: no reward), never 0


def test_trl_missing_answer_column_is_explained():
    with pytest.raises(KeyError, match="needs a 'answer' column"):
        trl_reward("math", workers=0)(prompts=["q"], completions=["<answer>1</answer>"], completion_ids=[[1]], label=["1"])


# ---- EasyR1 ---------------------------------------------------------------------------------------


def test_easyr1_batch_signature():
    reward_inputs = [{"response": r, "response_length": len(r), "ground_truth": t} for r, t in zip(RESPONSES, TRUTHS)]
    reward_inputs[2]["extra_info"] = {"choices": ["2", "4", "3", "5"]}
    scores = easyr1_compute_score(reward_inputs, reward="0.9*math+0.1*format", workers=1)
    assert REWARD_TYPE == "batch"
    assert [s["overall"] for s in scores] == pytest.approx(EXPECTED)
    assert scores[0] == {"overall": pytest.approx(1.0), "math": 1.0, "format": 1.0, "reward_failed": 0.0}
