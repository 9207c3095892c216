"""GRPO: the maths equals the textbook formulas (through verl's functions), and it learns."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from openvlt.backends import GRPOConfig
from openvlt.backends.local import grpo_actor_config, grpo_advantages, grpo_loss
from openvlt.recipe import RewardSettings
from openvlt.stages.common import load_problems
from openvlt.stages.grpo import answer_is_right, train_grpo, training_reward
from ..conftest import plugin_file
from rewards.batch import ScoreResult

PLUGINS = Path(__file__).with_name("plugins.py")


def test_advantages_are_group_normalised_and_skip_failed_rollouts():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.0])
    valid = torch.tensor([True, True, True, True, True, True, False, True])
    mask = torch.ones(8, 5)
    mask[1, 3:] = 0
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    adv = grpo_advantages(rewards, valid, mask * valid[:, None], group, norm_by_std=True)
    for g in (0, 1):
        rows = [i for i in range(8) if group[i] == g and valid[i]]
        r = rewards[rows]
        expected = (r - r.mean()) / (r.std(unbiased=True) + 1e-6)  # the failed rollout is not in its group
        assert adv[rows, 0].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert adv[6].abs().sum() == 0  # failed rollout: no gradient
    assert adv[1, 3:].abs().sum() == 0 and adv[1, :3].tolist() == pytest.approx([adv[1, 0].item()] * 3)
    dr = grpo_advantages(rewards, valid, mask, group, norm_by_std=False)  # Dr.GRPO: centred, not scaled
    assert dr[0, 0].item() == pytest.approx(1.0 - 0.5)
    # group 0's other rollout failed: the one left has no baseline, so no push either way; group 1 as usual
    lone = grpo_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]), torch.tensor([True, False, True, True, True]),
                           torch.ones(5, 5), np.array([0, 0, 1, 1, 1]), norm_by_std=True)
    assert lone[:2].abs().sum() == 0
    r = torch.tensor([1.0, 0.0, 0.0])
    assert lone[2:, 0].tolist() == pytest.approx(((r - r.mean()) / (r.std(unbiased=True) + 1e-6)).tolist(), abs=1e-5)


def test_loss_is_the_clipped_objective_plus_low_variance_kl():
    torch.manual_seed(0)
    logp = torch.randn(4, 6) * 0.3 - 1
    old = logp + torch.randn(4, 6) * 0.3
    ref = logp + torch.randn(4, 6) * 0.1
    adv = torch.randn(4, 1).expand(4, 6).clone()
    mask = torch.ones(4, 6)
    mask[2, 4:] = 0
    config = GRPOConfig(clip_ratio_low=0.2, clip_ratio_high=0.28, kl_coef=0.05)
    actor = grpo_actor_config(config)
    actor.global_batch_info.update(batch_num_tokens=int(mask.sum()), dp_size=1)
    loss, pg, kl, clipfrac = grpo_loss(logp, old, ref, adv, mask, config, actor)

    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1 - 0.2, 1 + 0.28)
    per_token = torch.maximum(-adv * ratio, -adv * clipped)
    per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * 3.0), per_token)  # dual clip, c = 3
    expected_pg = (per_token * mask).sum() / mask.sum()
    diff = ref - logp  # k3 ("low_var_kl"): exp(ref - logp) - (ref - logp) - 1, clamped to [-10, 10]
    expected_kl = ((torch.exp(diff) - diff - 1).clamp(-10, 10) * mask).sum() / mask.sum()
    assert pg == pytest.approx(expected_pg.item(), abs=1e-5)
    assert kl == pytest.approx(expected_kl.item(), abs=1e-5)
    assert loss.item() == pytest.approx(expected_pg.item() + 0.05 * expected_kl.item(), abs=1e-5)
    assert 0 < clipfrac < 1


def test_the_training_reward_is_built_around_the_problems_own():
    assert training_reward("math", GRPOConfig()) == "math"
    assert training_reward("math", GRPOConfig(format_weight=0.1)) == "0.9*math+0.1*format"
    assert training_reward("0.5*math+0.5*iou", GRPOConfig(format_weight=0.2)) == "0.4*math+0.4*iou+0.2*format"
    shaped = GRPOConfig(reward="0.8*{reward}+0.2*len.py:short")
    assert training_reward("toyworld", shaped) == "0.8*toyworld+0.2*len.py:short"
    assert training_reward("0.9*math+0.1*format", shaped) == "0.72*math+0.08*format+0.2*len.py:short"  # own parts weighted
    assert training_reward("math", GRPOConfig(reward="{reward}+format", format_weight=0.5)) == "0.5*math+format"  # format: 0.5 * 1 + 0.5
    assert training_reward("math", GRPOConfig(reward="len.py:short")) == "len.py:short"  # no {reward}: replaced
    precise = GRPOConfig(reward="0.123456789*{reward}+0.876543211*format")  # weights kept, so a perfect rollout sums to 1
    assert training_reward("math", precise) == "0.123456789*math+0.876543211*format"


def test_a_rollout_is_right_as_evaluation_counts_it_under_any_training_reward(tmp_path, monkeypatch):
    """GRPO's `accuracy` column: the problem's own reward at reward.correct_at, not the training reward."""
    def judged(reward, score, components=None, status="ok"):
        return ScoreResult(index=0, status=status, score=score, components=components, reward=reward)

    lenient = RewardSettings(correct_at=0.5)
    assert answer_is_right(judged("math", 0.6), "math", lenient) is True  # correct_at, not a score of 1
    assert answer_is_right(judged("math", 0.4), "math", lenient) is False
    assert answer_is_right(judged("0.8*math+0.2*format", float("nan"), status="timeout"), "math", lenient) is False
    shaped = "0.8*math+0.2*len.py:short"
    assert answer_is_right(judged(shaped, 0.8, {"math": 1.0, "len.py:short": 0.0}), "math", RewardSettings()) is True
    assert answer_is_right(judged(shaped, 0.2, {"math": 0.0, "len.py:short": 1.0}), "math", RewardSettings()) is False
    # an own reward that is a composition, spread over the training reward's terms, is summed back
    spread = {"math": 1.0, "format": 0.0, "len.py:short": 1.0}
    assert answer_is_right(judged("0.72*math+0.08*format+0.2*len.py:short", 0.92, spread), "0.9*math+0.1*format",
                           RewardSettings(correct_at=0.9)) is True
    assert answer_is_right(judged("0.72*math+0.08*format+0.2*len.py:short", 0.92, spread), "0.9*math+0.1*format",
                           RewardSettings()) is False
    perfect = {"math": 1.0, "format": 1.0, "iou": 1.0, "len.py:short": 0.0}  # 0.7 + 0.2 + 0.1 is 1, not 0.9999999999999999
    assert answer_is_right(judged("0.35*math+0.1*format+0.05*iou+0.5*len.py:short", 0.5, perfect),
                           "0.7*math+0.2*format+0.1*iou", RewardSettings()) is True
    assert answer_is_right(judged("len.py:short", 1.0, None), "math", RewardSettings()) is None  # own left out: cannot tell
    # a plugin file is named by its absolute path in the composition's parts, however the recipe wrote it
    monkeypatch.chdir(tmp_path)
    plugin_file(tmp_path / "mine.py", "")
    components = {f"{tmp_path}/mine.py:score": 1.0, "format": 0.0}
    assert answer_is_right(judged("0.8*mine.py:score+0.2*format", 0.8, components), "mine.py:score", RewardSettings()) is True


def test_grpo_trains_on_grpo_reward_and_logs_each_part(tiny_student, toyworld_dir, tmp_path):
    """Rollouts are scored with grpo.reward around the row's own plugin (toyworld here), and each step
    logs every part's mean, so the own plugin's share stays visible under shaping."""
    problems = load_problems(toyworld_dir / "train.parquet", 0, 8)
    digits = f"{PLUGINS}:digit_share"
    config = GRPOConfig(steps=2, prompts_per_step=4, rollouts=4, max_tokens=16, lr=1e-3, reward=f"0.5*{{reward}}+0.5*{digits}",
                        format_weight=0.2)
    train_grpo(problems, tiny_student, tmp_path / "g", config=config, judge=RewardSettings(workers=1), seed=0,
               options={"checkpoint_every": 0})
    curve = [json.loads(line) for line in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    assert len(curve) == 2
    for row in curve:
        parts = row["reward_parts"]
        assert {"toyworld", "toyworld.answer", "toyworld.faithful", digits, "format"} <= set(parts)
        assert row["reward"] == pytest.approx(0.4 * parts["toyworld"] + 0.4 * parts[digits] + 0.2 * parts["format"], abs=1e-9)
        assert row["accuracy"] == pytest.approx(parts["toyworld"])  # toyworld scores 0 or 1: its mean is the share right

    # problems judged by different plugins: each part is the mean over the rollouts of the problems it judged, and
    # a rollout is right by its own problem's plugin (both score 0 or 1 here, half the rollouts each)
    half = f"{PLUGINS}:lenient_half"
    mixed = [{**p, "reward": half} if i % 2 else p for i, p in enumerate(problems)]
    config = GRPOConfig(steps=1, prompts_per_step=8, rollouts=4, max_tokens=16, lr=1e-3, reward=f"0.5*{{reward}}+0.5*{digits}")
    train_grpo(mixed, tiny_student, tmp_path / "m", config=config, judge=RewardSettings(workers=1), seed=0,
               options={"checkpoint_every": 0})
    row = json.loads((tmp_path / "m" / "metrics.jsonl").read_text())
    parts = row["reward_parts"]
    assert set(parts) == {"toyworld", "toyworld.answer", "toyworld.faithful", half, digits}
    assert row["reward"] == pytest.approx(0.5 * (parts["toyworld"] + parts[half]) / 2 + 0.5 * parts[digits], abs=1e-9)
    assert 0 < row["accuracy"] == pytest.approx((parts["toyworld"] + parts[half]) / 2)


def test_mean_reward_rises_on_a_learnable_task(tiny_student, toyworld_dir, tmp_path):
    """A dense reward a random-init policy can climb (the share of digits it writes): GRPO must climb it.

    The climb is slow, then fast (0.01 -> ~0.1 by step 20 -> ~0.9 by step 40 here); 40 steps keep a wide
    margin over the floating-point differences between CPUs, which shift the knee by a few steps."""
    problems = load_problems(toyworld_dir / "train.parquet", 0, 32)
    config = GRPOConfig(steps=40, prompts_per_step=8, rollouts=8, max_tokens=12, lr=3e-3, kl_coef=0.001, micro_batch_size=64)
    counts = _grpo_on_digit_share(problems, tiny_student, tmp_path / "grpo", config)
    curve = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    first, last = np.mean([r["reward"] for r in curve[:4]]), np.mean([r["reward"] for r in curve[-4:]])
    assert last > 5 * first and last > first + 0.3, (first, last)
    assert counts["steps"] == 40 and counts["reward_errors"] == 0 and curve[-1]["kl"] > 0
    assert curve[-1]["reward_parts"] == {f"{PLUGINS}:digit_share": pytest.approx(curve[-1]["reward"])}  # one plugin: its total
    assert (tmp_path / "grpo" / "model.safetensors").exists() and not (tmp_path / "grpo" / "_checkpoint").exists()


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batch_size_does_not_change_the_update(tiny_student, toyworld_dir, tmp_path, loss_agg_mode):
    """Micro-batches (taken in length order, cut to their longest rollout) are for memory and speed
    only: every aggregation is over the whole mini-batch (tokens, or sequences), so the weights come out the same."""
    problems = load_problems(toyworld_dir / "train.parquet", 0, 8)
    weights = []
    for micro in (64, 3):
        config = GRPOConfig(steps=1, prompts_per_step=4, rollouts=4, max_tokens=16, lr=1e-3, kl_coef=0.01, micro_batch_size=micro,
                            loss_agg_mode=loss_agg_mode)
        _grpo_on_digit_share(problems, tiny_student, tmp_path / f"m{micro}", config)
        weights.append(load_file(tmp_path / f"m{micro}" / "model.safetensors"))
    moved = load_file(tiny_student / "model.safetensors")
    assert any(not torch.equal(moved[n], t) for n, t in weights[0].items())  # it did train
    for name, tensor in weights[0].items():
        assert torch.allclose(tensor, weights[1][name], atol=1e-5), name


def test_mini_batches_are_whole_prompt_groups_in_order_as_verl_cuts_them(tiny_student, toyworld_dir, tmp_path, monkeypatch):
    """6 prompts x 2 rollouts in 3 mini-batches, 2 epochs: 6 updates, each on 2 prompts' 4 rollouts, the same
    cut every epoch (verl: ppo_mini_batch_size prompts x rollout.n, actor.shuffle off)."""
    from openvlt.backends import local

    passes = []  # the rows of each length-ordered pass (the reference's, the old policy's, each mini-batch's); None: an update
    monkeypatch.setattr(local._GuardedUpdate, "__call__", lambda self: passes.append(None) or 0.0)
    monkeypatch.setattr(local, "_by_length", lambda rows, batch: passes.append(sorted(rows.tolist())) or rows)
    config = GRPOConfig(steps=1, prompts_per_step=6, rollouts=2, max_tokens=8, lr=1e-3, mini_batches=3, ppo_epochs=2,
                        micro_batch_size=64)
    _grpo_on_digit_share(load_problems(toyworld_dir / "train.parquet", 0, 6), tiny_student, tmp_path / "g", config)
    assert passes[:2] == [list(range(12))] * 2 and passes.count(None) == 6
    cuts = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert [rows for rows in passes[2:] if rows is not None] == cuts * 2


def test_freeze_vision_leaves_the_vision_tower_untouched(tiny_student, toyworld_dir, tmp_path):
    from openvlt.backends.local import freeze_vision_tower

    problems = load_problems(toyworld_dir / "train.parquet", 0, 8)
    config = GRPOConfig(steps=2, prompts_per_step=4, rollouts=4, max_tokens=16, lr=1e-2, kl_coef=0.01, freeze_vision=True)
    _grpo_on_digit_share(problems, tiny_student, tmp_path / "g", config)
    before, after = load_file(tiny_student / "model.safetensors"), load_file(tmp_path / "g" / "model.safetensors")
    vision = [n for n in before if ".visual." in f".{n}"]
    assert vision and all(torch.equal(before[n], after[n]) for n in vision)
    assert any(not torch.equal(before[n], after[n]) for n in before if n not in vision)  # the language model trained
    with pytest.raises(ValueError, match="no vision tower"):
        freeze_vision_tower(torch.nn.Linear(2, 2))


def test_autocast_computes_the_log_probabilities_in_bfloat16_and_updates_float32_weights(tiny_student, toyworld_dir,
                                                                                          tmp_path, logit_dtypes):
    problems = load_problems(toyworld_dir / "train.parquet", 0, 8)
    config = GRPOConfig(steps=1, prompts_per_step=4, rollouts=4, max_tokens=16, lr=1e-3, kl_coef=0.01, ppo_epochs=2)
    _grpo_on_digit_share(problems, tiny_student, tmp_path / "g", config, autocast="bfloat16")  # 2 epochs: an old-log-prob pass
    policy_trains = [dtype for dtype, model, grad in logit_dtypes if model == 0 and grad]
    reference = [dtype for dtype, model, grad in logit_dtypes if model == 1]
    policy_no_grad = {dtype for dtype, model, grad in logit_dtypes if model == 0 and not grad}
    assert policy_trains and set(policy_trains) == {torch.bfloat16}  # every training pass
    assert reference and set(reference) == {torch.bfloat16}
    assert policy_no_grad == {torch.bfloat16, torch.float32}  # old log-probs; rollouts are sampled in float32
    before, after = load_file(tiny_student / "model.safetensors"), load_file(tmp_path / "g" / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in after.values())
    assert any(not torch.equal(before[n], t) for n, t in after.items())


def test_a_direct_caller_with_greedy_rollouts_gets_an_error_before_any_work(tiny_student, toyworld_dir, tmp_path):
    problems = load_problems(toyworld_dir / "train.parquet", 0, 2)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0.0"):
        _grpo_on_digit_share(problems, tiny_student, tmp_path / "g", GRPOConfig(steps=1, temperature=0.0))
    assert not (tmp_path / "g").exists()


def test_a_step_whose_rollouts_all_failed_to_be_judged_stops_the_stage_naming_the_error(tiny_student, toyworld_dir, tmp_path):
    """A reward plugin that raises leaves nothing to learn from: going on would update nothing for the whole
    stage and hand the next iteration its SFT model under the name of a GRPO one."""
    problems = load_problems(toyworld_dir / "train.parquet", 0, 4)
    config = GRPOConfig(steps=2, prompts_per_step=2, rollouts=2, max_tokens=8, lr=1e-3)
    with pytest.raises(ValueError) as err:
        train_grpo(problems, tiny_student, tmp_path / "g", config=config,
                   judge=RewardSettings(workers=1, override=f"{PLUGINS}:raises"), options={"checkpoint_every": 0})
    assert re.match(r"GRPO step 1: none of its 4 rollouts could be judged \(4 reward errors, 0 timeouts; first: reward "
                    r"'.*plugins.py:raises' on item 0 \(problem toyworld-\S+, step 1 rollout 0\) raised RuntimeError: boom \(plugins.py line \d+\)\)\. "
                    r"Fix the plugin and run the same command again \(it names the completed stages that judged with the old plugin, "
                    r"to run again with --redo or keep with --force; a changed recipe value, such as reward.timeout or "
                    r"grpo.reward, needs --force and starts the stage over\)$", str(err.value)), str(err.value)
    assert not (tmp_path / "g" / "model.safetensors").exists() and (tmp_path / "g" / "metrics.jsonl").read_text() == ""


def test_rollouts_that_failed_to_be_judged_are_left_out_of_the_reward_not_counted_as_zero(tiny_student, toyworld_dir, tmp_path):
    problems = load_problems(toyworld_dir / "train.parquet", 0, 4)
    config = GRPOConfig(steps=2, prompts_per_step=2, rollouts=4, max_tokens=8, lr=1e-3)
    counts = train_grpo(problems, tiny_student, tmp_path / "g", config=config,
                        judge=RewardSettings(workers=1, override=f"{PLUGINS}:raises_on_half"), options={"checkpoint_every": 0})
    curve = [json.loads(line) for line in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    assert counts["reward_errors"] == sum(r["reward_errors"] for r in curve) > 0
    assert [r["reward"] for r in curve] == [1.0, 1.0]  # the mean over the judged rollouts, each scored 1
    assert all(r["kl"] is not None for r in curve)  # and the policy was updated on them
    from openvlt.backends import local  # a kill before the workspace recorded the stage: its rerun takes the model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "grpo", lambda *a, **k: pytest.fail("trained again"))
        assert train_grpo(problems, tiny_student, tmp_path / "g", config=config, options={"checkpoint_every": 0},
                          judge=RewardSettings(workers=1, override=f"{PLUGINS}:raises_on_half")) == counts


def _grpo_on_digit_share(problems, tiny_student, out, config, **options):
    """GRPO on a dense reward a random-init policy can climb: the share of digits it writes."""
    return train_grpo(problems, tiny_student, out, config=config, judge=RewardSettings(workers=1, override=f"{PLUGINS}:digit_share"),
                      seed=0, options={"checkpoint_every": 0, **options})


def test_problems_whose_prompt_is_too_long_are_left_out_and_counted(tiny_student, toyworld_dir, tmp_path, monkeypatch, caplog):
    """grpo.max_prompt_length (verl's data.max_prompt_length), or else the student's context less
    grpo.max_tokens: a longer prompt is left out of the rollouts, counted and named."""
    from openvlt.backends import local
    from openvlt.models import load_processor
    from openvlt.models.batching import prompt_lengths

    problems = [{**p, "question": p["question"] + " Think it over twice." * (12 if k % 2 else 0)}
                for k, p in enumerate(load_problems(toyworld_dir / "train.parquet", 0, 4))]
    lengths = prompt_lengths(load_processor(tiny_student), [p["question"] for p in problems], [p["images"] for p in problems])
    limit = max(lengths[0], lengths[2])
    assert min(lengths[1], lengths[3]) > limit
    trained = []
    real_grpo = local.grpo
    monkeypatch.setattr(local, "grpo", lambda rl, *a, **kw: trained.append([p["id"] for p in rl]) or real_grpo(rl, *a, **kw))
    config = GRPOConfig(steps=1, prompts_per_step=2, rollouts=2, max_tokens=4, max_prompt_length=limit)
    counts = _grpo_on_digit_share(problems, tiny_student, tmp_path / "capped", config)
    assert counts["in"] == 4 and counts["too_long"] == 2 and trained == [[problems[0]["id"], problems[2]["id"]]]
    assert f"2 of 4 RL problems are longer than grpo.max_prompt_length ({limit} tokens)" in caplog.text
    # without it, the context less the answer's room: here 4096 - 4090 = 6 tokens, shorter than any prompt
    with pytest.raises(ValueError, match=r"every one of the 4 RL problems is longer than the student's context less "
                                         r"grpo.max_tokens \(6 tokens; the shortest has \d+\): bound the images' size "
                                         r"\(roles.student.options.max_pixels\), or set grpo.max_prompt_length$"):
        _grpo_on_digit_share(problems, tiny_student, tmp_path / "none", GRPOConfig(steps=1, rollouts=2, max_tokens=4090))
    with pytest.raises(ValueError, match=r"grpo.max_tokens \(5000\) leaves no room for a prompt in the student's context "
                                         r"\(4096 tokens\): lower grpo.max_tokens, or set grpo.max_prompt_length"):
        _grpo_on_digit_share(problems, tiny_student, tmp_path / "none", GRPOConfig(steps=1, rollouts=2, max_tokens=5000))
    assert not (tmp_path / "none").exists()
