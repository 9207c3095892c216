"""The local backend: the tensors GRPO trains on are the tokens the policy sampled, and its maths is verl's."""
import json

import numpy as np
import pytest
import torch

from openvlt.backends import LocalOptions
from openvlt.backends.local import _batch_indices, _logprobs_in_chunks, _Metrics, _response_logprobs, _rows, _trace_loss_sum
from openvlt.engines import Request, Sampling
from openvlt.engines.hf import HFEngine
from openvlt.models.batching import chat_text, collate, encode_examples, encode_rollouts
from openvlt.records import load_image
from openvlt.stages.common import load_problems

from ..conftest import decisive_engine


@pytest.fixture(scope="module")
def engine(tiny_student):
    return decisive_engine(tiny_student, batch_size=16)  # greedy tokens that depend on prompt, image and position


@pytest.fixture(scope="module")
def problems(toyworld_dir):
    return load_problems(toyworld_dir / "train.parquet", 0, 6)


def test_training_forward_reproduces_what_generation_sampled(engine, problems):
    """Greedy tokens from left-padded batched generation are the argmax of the right-padded
    teacher-forced forward at every position: prompts, images and positions line up."""
    requests = [Request(p["question"], tuple(p["images"])) for p in problems]
    _, ids = engine.generate_ids(requests, Sampling(n=1, temperature=0, max_tokens=12))
    batch, resp_pos, resp_mask = encode_rollouts(engine.processor, [r.prompt for r in requests],
                                                 [r.images for r in requests], [i[0] for i in ids], 1)
    with torch.no_grad():
        inputs = _rows(batch, torch.arange(len(requests)))
        logits = engine.model(**inputs).logits[:, :-1]
        predicted = logits.argmax(-1).gather(1, resp_pos)
    assert len({tuple(i[0]) for i in ids}) == len(requests)  # each prompt answered differently
    for row, generated in enumerate(ids):
        n = len(generated[0])
        assert resp_mask[row].sum() == n
        assert predicted[row, :n].tolist() == generated[0]


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_response_logprobs_are_aligned_with_response_tokens(engine, problems, temperature):
    """...and are those of the distribution sampled from: logits / rollout temperature, as in verl."""
    requests = [Request(p["question"], tuple(p["images"])) for p in problems[:3]]
    _, ids = engine.generate_ids(requests, Sampling(n=2, temperature=temperature, max_tokens=10, seed=3))
    flat = [i for row in ids for i in row]
    batch, resp_pos, resp_mask = encode_rollouts(engine.processor, [r.prompt for r in requests],
                                                 [r.images for r in requests], flat, 2)
    with torch.no_grad():
        ours = _response_logprobs(engine.model, _rows(batch, torch.arange(6)), resp_pos, temperature)
        for row, tokens in enumerate(flat):  # one sequence at a time, no padding at all
            single, pos, _ = encode_rollouts(engine.processor, [requests[row // 2].prompt], [requests[row // 2].images], [tokens], 1)
            logits = (engine.model(**_rows(single, torch.arange(1))).logits[0] / temperature).log_softmax(-1)
            start = pos[0, 0].item()
            manual = [logits[start + j, t].item() for j, t in enumerate(tokens)]
            assert ours[row, : len(tokens)].tolist() == pytest.approx(manual, abs=1e-4)
            assert resp_mask[row, len(tokens):].sum() == 0


def test_length_ordered_chunks_give_the_same_logprobs_as_one_padded_batch(engine, problems):
    """Micro-batches are taken in length order and cut to their longest row (less padding); every
    row's response log-probs must come back in its own place, unchanged."""
    requests = [Request(p["question"], tuple(p["images"])) for p in problems]
    _, ids = engine.generate_ids(requests, Sampling(n=2, temperature=1.0, max_tokens=14, seed=5))
    flat = [i[: 2 + (k * 5) % 13] for k, i in enumerate(row for pair in ids for row in pair)]  # lengths 2..14, mixed order
    batch, resp_pos, resp_mask = encode_rollouts(engine.processor, [r.prompt for r in requests],
                                                 [r.images for r in requests], flat, 2)
    assert len(set(resp_mask.sum(1).tolist())) > 5
    with torch.no_grad():
        whole = _response_logprobs(engine.model, _rows(batch, torch.arange(len(flat))), resp_pos, 1.0)
        chunked = _logprobs_in_chunks(engine.model, batch, resp_pos, 3, "cpu", 1.0)
    assert torch.allclose(whole * resp_mask, chunked * resp_mask, atol=1e-5)


def test_the_language_model_head_runs_on_the_positions_that_are_trained_only(engine, problems):
    """At a real vocabulary the prompt's logits (images included) would be most of a step's memory:
    the head must see only the positions from the earliest response (GRPO) or trace token (SFT) on,
    and the log-probs and loss must be those of the full forward pass."""
    widths: list[int] = []
    hook = engine.model.get_output_embeddings().register_forward_hook(lambda m, inputs, out: widths.append(inputs[0].shape[1]))
    try:
        questions = [problems[0]["question"], problems[1]["question"] + " Answer with care, and show every step."]
        images = [problems[0]["images"], problems[1]["images"]]
        ids = [engine.processor.tokenizer(t)["input_ids"] for t in ("<think>two</think> <answer>3</answer>", "<answer>7</answer>")]
        batch, resp_pos, resp_mask = encode_rollouts(engine.processor, questions, images, ids, 1)
        rows = _rows(batch, torch.arange(2))
        with torch.no_grad():
            ours = _response_logprobs(engine.model, rows, resp_pos, 0.7)
            full = (engine.model(**rows).logits[:, :-1] / 0.7).log_softmax(-1).gather(-1, rows["input_ids"][:, 1:, None])[..., 0]
            width = rows["input_ids"].shape[1]
            assert widths[0] == width - int(resp_pos[:, 0].min()) < width - 30  # from the earlier response's start: no prompt, no image
            assert torch.allclose(ours * resp_mask, full.gather(1, resp_pos.clamp(max=width - 2)) * resp_mask, atol=1e-5)

            widths.clear()
            sft_batch = collate([encode_examples(engine.processor, [q], [im], [t]) for q, im, t in
                                 zip(questions, images, ["<think>two</think> <answer>3</answer>", "<answer>7</answer>"])],
                                engine.processor.tokenizer.pad_token_id)
            labels = sft_batch.pop("labels")
            loss = _trace_loss_sum(engine.model, sft_batch, labels, LocalOptions())
            logits = engine.model(**sft_batch).logits[:, :-1]
            expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                         ignore_index=-100, reduction="sum")
            first_trace_token = int((labels[:, 1:] != -100).int().argmax(1).min())
            assert widths[0] == sft_batch["input_ids"].shape[1] - first_trace_token < sft_batch["input_ids"].shape[1] - 30
            assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    finally:
        hook.remove()


def test_sft_labels_cover_exactly_the_response_and_end_of_turn(engine, problems):
    p = problems[0]
    batch = encode_examples(engine.processor, [p["question"]], [p["images"]], ["<think>x</think> <answer>3</answer>"])
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    expected = engine.processor.tokenizer("<think>x</think> <answer>3</answer><|im_end|>")["input_ids"]
    assert labelled == expected
    # prompt and response tokenized apart give the ids of the whole conversation tokenized at once
    whole = engine.processor(text=[chat_text(engine.processor, p["question"]) + "<think>x</think> <answer>3</answer><|im_end|>"],
                             images=[load_image(im) for im in p["images"]], return_tensors="pt")
    assert torch.equal(batch["input_ids"], whole["input_ids"])


def test_a_batch_mixing_text_only_and_image_rows_keeps_every_image_in_place(engine, problems):
    """Records may have no image. Whichever row comes first, the batch carries every image row's
    patches, and each row computes what it computes alone (SFT collate and GRPO rollout rows)."""
    p = problems[0]
    image_row = encode_examples(engine.processor, [p["question"]], [p["images"]], ["<think>red</think> <answer>3</answer>"])
    text_row = encode_examples(engine.processor, ["What is 2 + 1?"], [[]], ["<answer>3</answer>"])
    assert "pixel_values" not in text_row
    pad = engine.processor.tokenizer.pad_token_id
    with torch.no_grad():
        alone = engine.model(**{k: v for k, v in image_row.items() if k != "labels"}).logits[0]
        for rows, at in (([text_row, image_row], 1), ([image_row, text_row], 0)):
            batch = collate(rows, pad)
            assert torch.equal(batch["pixel_values"], image_row["pixel_values"])
            logits = engine.model(**{k: v for k, v in batch.items() if k != "labels"}).logits[at, : alone.shape[0]]
            assert torch.allclose(logits, alone, atol=1e-4)
    ids = engine.processor.tokenizer("<answer>3</answer>")["input_ids"]
    rollouts, _, _ = encode_rollouts(engine.processor, ["What is 2 + 1?", p["question"]], [[], p["images"]], [ids, ids[:2]], 1)
    n = image_row["pixel_values"].shape[0]
    assert rollouts["row_patches"].tolist() == [[0, 0], [0, n]]  # each row's span of the patches
    assert "pixel_values" not in _rows(rollouts, torch.tensor([0]))  # a micro-batch of text-only rows
    assert torch.equal(_rows(rollouts, torch.tensor([1, 0]))["pixel_values"], image_row["pixel_values"])

    # 3 rollouts of two image prompts: each prompt's patches held once, each row given its prompt's
    q = problems[1]
    three, _, _ = encode_rollouts(engine.processor, [p["question"], q["question"]], [p["images"], q["images"]],
                                  [ids, ids[:2], ids[:1], ids, ids[:3], ids[:2]], 3)
    other = encode_examples(engine.processor, [q["question"]], [q["images"]], ["x"])["pixel_values"]
    assert torch.equal(three["pixel_values"], torch.cat([image_row["pixel_values"], other]))
    assert torch.equal(_rows(three, torch.tensor([4, 0, 1]))["pixel_values"],
                       torch.cat([other, image_row["pixel_values"], image_row["pixel_values"]]))
    assert _rows(three, torch.tensor([5, 2]))["image_grid_thw"].tolist() == [*encode_examples(
        engine.processor, [q["question"]], [q["images"]], ["x"])["image_grid_thw"].tolist(), *image_row["image_grid_thw"].tolist()]


def test_a_trace_that_spells_control_tokens_trains_on_their_characters(engine, problems):
    """Traces are model output: one that writes `<|image_pad|>` or `<|im_end|>` must neither claim an
    image slot (the forward pass would fail) nor end the turn early (the model would learn to stop)."""
    p, tokenizer = problems[0], engine.processor.tokenizer
    trace = "<think>see <|image_pad|> then <|im_end|> go</think> <answer>3</answer>"
    batch = encode_examples(engine.processor, [p["question"]], [p["images"]], [trace])
    clean = encode_examples(engine.processor, [p["question"]], [p["images"]], ["<think>x</think> <answer>3</answer>"])
    image, end = engine.model.config.image_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (batch["input_ids"] == image).sum() == (clean["input_ids"] == image).sum() > 0
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert tokenizer.decode(labelled) == trace + "<|im_end|>"
    assert labelled.count(end) == 1 and labelled[-1] == end and image not in labelled
    with torch.no_grad():
        assert torch.isfinite(engine.model(**{k: v for k, v in batch.items() if k != "labels"}).logits).all()


def test_resumed_metrics_keep_the_rows_up_to_the_checkpoint_and_survive_a_torn_line(tmp_path):
    """A crash mid-append can leave half a JSON line: the resumed stage drops it with the rows past its
    checkpoint instead of failing on every restart."""
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    metrics = _Metrics(path, resume_step=2)
    metrics.write({"step": 3, "loss": 0.5})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_a_checkpoint_reaches_the_disk_after_the_metrics_rows_it_keeps(tiny_student, toyworld_dir, tmp_path, monkeypatch):
    """Metrics rows are appended without a sync; a resume keeps those up to the checkpoint's step, so they are
    synced before the checkpoint is: after a power loss, no resumed stage reports steps it lost."""
    import os

    from openvlt.backends import SFTConfig
    from openvlt.backends.local import sft

    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    examples = [{"prompt": p["question"], "images": p["images"], "response": f"<answer>{p['answer']}</answer>"}
                for p in load_problems(toyworld_dir / "train.parquet", 0, 4)]
    sft(examples, tiny_student, tmp_path / "m", SFTConfig(steps=3, batch_size=4), options={"checkpoint_every": 1})
    checkpoints = [i for i, name in enumerate(synced) if name.startswith(".state.pt.tmp-")]
    assert len(checkpoints) == 2  # steps 1 and 2 (the last step saves the model instead)
    assert all(synced[i - 1] == "metrics.jsonl" for i in checkpoints)


@pytest.mark.parametrize("killed", ["before the checkpoint went", "after the checkpoint went"])
def test_a_model_saved_whole_before_a_kill_is_taken_by_its_stage_not_trained_again_from_step_0(
        tiny_student, toyworld_dir, tmp_path, monkeypatch, killed):
    """A kill after the backend saved and before the stage was recorded: the rerun used to find no checkpoint
    and train again from step 0; the stage takes the saved folder. The backend itself, called into a saved
    folder (a benchmark run twice), trains again."""
    import shutil

    from openvlt.backends import SFTConfig
    from openvlt.backends import local
    from openvlt.stages.sft import train_sft

    selected = [{**p, "response": f"<answer>{p['answer']}</answer>"} for p in load_problems(toyworld_dir / "train.parquet", 0, 4)]
    config, out = SFTConfig(steps=3, batch_size=4), tmp_path / "m"
    real_rmtree = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda path, **kw: None)  # the checkpoint stays: killed before it went
    first = train_sft(selected, tiny_student, out, config=config, options={"checkpoint_every": 1})
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert (out / "_checkpoint" / "state.pt").exists() and (out / ".saved").exists()
    if killed == "after the checkpoint went":
        real_rmtree(out / "_checkpoint")
    weights, metrics = (out / "model.safetensors").read_bytes(), (out / "metrics.jsonl").read_text()
    real_sft = local.sft
    monkeypatch.setattr(local, "sft", lambda *a, **k: pytest.fail("trained again"))
    assert train_sft(selected, tiny_student, out, config=config, options={"checkpoint_every": 1}) == first
    assert (out / "model.safetensors").read_bytes() == weights and (out / "metrics.jsonl").read_text() == metrics
    assert not (out / "_checkpoint").exists()  # the folder is a clean Hugging Face folder again

    trained = []
    monkeypatch.setattr(local, "load_model", lambda *a, **k: trained.append(1) or pytest.fail("trained again"))
    with pytest.raises(BaseException, match="trained again"):
        real_sft([{"prompt": p["question"], "images": p["images"], "response": p["response"]} for p in selected],
                 tiny_student, out, config)
    assert trained and not (out / ".saved").exists()  # not saved until it is again


def test_batches_are_a_pure_function_of_step():
    seen = [i for step in range(1, 6) for i in _batch_indices(10, 4, step, seed=7)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))  # epochs are permutations
    assert _batch_indices(10, 4, 3, seed=7) == seen[8:12]  # resuming at step 3 sees the same batch
    assert _batch_indices(10, 4, 3, seed=8) != seen[8:12]


def test_gradient_accumulation_does_not_change_the_update(tiny_student, toyworld_dir, tmp_path):
    """The loss is a token mean over the optimiser batch however it is cut: the same gradient norms
    (before clipping, so a scaled loss shows) and the same weights, over steps that see different batches."""
    from safetensors.torch import load_file

    from openvlt.backends import SFTConfig
    from openvlt.backends.local import sft

    rows = load_problems(toyworld_dir / "train.parquet", 0, 16)
    examples = [{"prompt": p["question"], "images": p["images"],  # responses of different lengths: micro-batches differ
                 "response": f"<think>{' red' * (3 * (k % 8))}</think> <answer>{p['answer']}</answer>"} for k, p in enumerate(rows)]
    weights, norms = [], []
    for accum in (1, 4):
        out = sft(examples, tiny_student, tmp_path / f"a{accum}", SFTConfig(steps=4, batch_size=8, grad_accum=accum, lr=1e-3),
                  options={"checkpoint_every": 0})
        weights.append(load_file(out / "model.safetensors"))
        norms.append([json.loads(line)["grad_norm"] for line in (out / "metrics.jsonl").read_text().splitlines()])
    assert len(norms[0]) == 4 and np.allclose(norms[0], norms[1], rtol=1e-4)
    initial = load_file(tiny_student / "model.safetensors")
    assert any(not torch.allclose(tensor, initial[name]) for name, tensor in weights[0].items())
    for name, tensor in weights[0].items():
        assert torch.allclose(tensor, weights[1][name], atol=1e-5), name


def test_a_non_finite_gradient_skips_its_update_and_logs_the_rate_each_step_trained_at(tiny_student, toyworld_dir,
                                                                                        tmp_path, monkeypatch):
    """An overflowed gradient (an inf from bfloat16 autocast) skips that update, as verl does, rather than
    clipping it into NaN and saving NaN weights; a loss that keeps diverging stops the stage. The logged
    lr is the one the step used: warm-up starts at lr / warmup_steps."""
    from safetensors.torch import load_file

    from openvlt.backends import SFTConfig
    from openvlt.backends.local import sft

    examples = [{"prompt": p["question"], "images": p["images"], "response": f"<answer>{p['answer']}</answer>"}
                for p in load_problems(toyworld_dir / "train.parquet", 0, 8)]
    clip, calls, poisoned = torch.nn.utils.clip_grad_norm_, [0], set()

    def overflow_at(*updates):
        def clip_with_overflow(params, *args, **kwargs):
            calls[0] += 1
            if calls[0] in updates or "all" in updates:
                next(p for p in params if p.grad is not None).grad[0].fill_(float("inf"))
                poisoned.add(calls[0])
            return clip(params, *args, **kwargs)
        calls[0] = 0
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_with_overflow)

    overflow_at(2)
    config = SFTConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=2, schedule="constant")
    out = sft(examples, tiny_student, tmp_path / "once", config, options={"checkpoint_every": 0})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    weights, initial = load_file(out / "model.safetensors"), load_file(tiny_student / "model.safetensors")
    assert poisoned == {2} and [np.isfinite(r["grad_norm"]) for r in rows] == [True, False, True]
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert any(not torch.equal(t, initial[name]) for name, t in weights.items())  # steps 1 and 3 trained
    assert [r["lr"] for r in rows] == pytest.approx([5e-4, 1e-3, 1e-3])

    overflow_at("all")
    with pytest.raises(FloatingPointError, match="sft: the gradient norm was not finite in 5 updates in a row: "
                                                 "the loss diverged; lower sft.lr"):
        sft(examples, tiny_student, tmp_path / "always", SFTConfig(steps=8, batch_size=4), options={"checkpoint_every": 0})


def test_autocast_runs_the_passes_in_bfloat16_and_keeps_float32_weights(tiny_student, toyworld_dir, tmp_path, logit_dtypes):
    from safetensors.torch import load_file

    from openvlt.backends import SFTConfig, local

    rows = load_problems(toyworld_dir / "train.parquet", 0, 8)
    examples = [{"prompt": p["question"], "images": p["images"], "response": f"<think>red</think> <answer>{p['answer']}</answer>"}
                for p in rows]
    curves, weights = {}, {}
    for autocast in ("none", "bfloat16"):
        logit_dtypes.clear()
        out = local.sft(examples, tiny_student, tmp_path / autocast, SFTConfig(steps=3, batch_size=8, lr=1e-3),
                        options={"checkpoint_every": 0, "autocast": autocast})
        assert {dtype for dtype, _, _ in logit_dtypes} == {torch.float32 if autocast == "none" else torch.bfloat16}
        curves[autocast] = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        weights[autocast] = load_file(out / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights["bfloat16"].values())  # the master weights stay float32
    first_fp32, first_bf16 = curves["none"][0], curves["bfloat16"][0]
    assert first_bf16 != first_fp32 and abs(first_bf16 - first_fp32) < 0.02 * first_fp32  # rounded, not different maths
    assert curves["bfloat16"][-1] < curves["bfloat16"][0]
    with pytest.raises(ValueError, match="backend.options.autocast: must be one of none, bfloat16, got 'float16'"):
        local.sft(examples, tiny_student, tmp_path / "bad", SFTConfig(steps=1, batch_size=8), options={"autocast": "float16"})
    for dtype in ("float16", "bfloat16"):  # neither has float32 master weights: bfloat16 rounds most updates away
        with pytest.raises(ValueError, match=f"backend.options.dtype: {dtype} weights cannot be trained with plain AdamW"):
            local.sft(examples, tiny_student, tmp_path / "bad", SFTConfig(steps=1, batch_size=8), options={"dtype": dtype})


def test_a_hub_style_folder_without_our_auto_map_still_loads_its_processor(tiny_student, tmp_path):
    """A real Qwen2.5-VL checkpoint has no processing_openvlt.py: on a machine without torchvision
    the stock processor cannot be built, and load_processor assembles the image-only one."""
    import json
    import shutil

    from openvlt.models import load_processor

    hub = tmp_path / "hub-like"
    shutil.copytree(tiny_student, hub)
    (hub / "processing_openvlt.py").unlink()
    config = json.loads((hub / "processor_config.json").read_text())
    config.pop("auto_map")
    (hub / "processor_config.json").write_text(json.dumps(config))
    processor = load_processor(hub)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor" and processor.image_processor is not None
    request, greedy = Request("How many? <image>", (_png(),)), Sampling(n=1, temperature=0, max_tokens=3)
    assert HFEngine(str(hub)).generate([request], greedy) == HFEngine(str(tiny_student)).generate([request], greedy)


def test_example_lengths_are_the_lengths_sft_trains_on_at_any_image_size(tiny_student, problems):
    """What sft.max_length is checked against: counted without the image processor, equal to the
    encoded length, with the folder's image size bounds and with tighter ones."""
    from openvlt.models import load_processor
    from openvlt.models.batching import example_lengths

    prompts = [p["question"] for p in problems] + ["Compare <image> with <image>.", "No image here."]
    images = [p["images"] for p in problems] + [(_png((640, 300)), problems[0]["images"][0]), ()]
    responses = [f"<think>{' red' * k}</think> <answer>{k}</answer>" for k in range(len(prompts))]
    counted = {}
    for bounds in ({}, {"max_pixels": 56 * 56 * 2, "min_pixels": 28 * 28}):
        processor = load_processor(tiny_student, **bounds)
        counted[len(bounds)] = example_lengths(processor, prompts, images, responses)
        encoded = [encode_examples(processor, [p], [ims], [r]) for p, ims, r in zip(prompts, images, responses)]
        assert counted[len(bounds)] == [int(e["attention_mask"].sum()) for e in encoded]
    assert counted[2][-2] < counted[0][-2] - 40 and counted[2][-1] == counted[0][-1]  # the 640 x 300 image shrank


def test_image_size_bounds_are_trained_with_and_kept_in_the_saved_folder(tiny_student, problems, tmp_path):
    """A checkpoint opened with plain transformers shows the model images at the size it was trained on."""
    from transformers import AutoProcessor

    from openvlt.backends import SFTConfig
    from openvlt.backends.local import sft
    from openvlt.models import load_processor

    examples = [{"prompt": p["question"], "images": p["images"], "response": f"<answer>{p['answer']}</answer>"} for p in problems]
    bounds = {"max_pixels": 3136, "min_pixels": 784}
    seen = []
    out = sft(examples, tiny_student, tmp_path / "bounded", SFTConfig(steps=1, batch_size=2), options={"checkpoint_every": 0},
              pixel_bounds=bounds, callback=lambda step, model, processor: seen.append(processor.image_processor.size))
    assert (seen[0].shortest_edge, seen[0].longest_edge) == (784, 3136)
    image = [load_image(problems[0]["images"][0])]
    text = ["<|vision_start|><|image_pad|><|vision_end|>"]
    grid = AutoProcessor.from_pretrained(out, trust_remote_code=True)(text=text, images=image)["image_grid_thw"]
    before = AutoProcessor.from_pretrained(tiny_student, trust_remote_code=True)(text=text, images=image)["image_grid_thw"]
    assert before.tolist() == [[1, 6, 6]] and grid.tolist() == [[1, 4, 4]]  # 84 x 84 pixels, then at most 3136
    assert load_processor(out).image_processor.size.longest_edge == 3136
    assert HFEngine(str(tiny_student), max_pixels=3136, min_pixels=784).processor.image_processor.size == seen[0]  # a role's options
    unbounded = sft(examples, tiny_student, tmp_path / "plain", SFTConfig(steps=1, batch_size=2), options={"checkpoint_every": 0})
    assert (unbounded / "preprocessor_config.json").read_bytes() == (tiny_student / "preprocessor_config.json").read_bytes()


def test_a_model_saved_from_a_hub_name_gets_the_processor_files_of_its_cached_snapshot(tiny_student, tmp_path, monkeypatch):
    """A recipe's student may be a hub name (`Qwen/Qwen2.5-VL-3B-Instruct`): its checkpoints must still be
    complete folders, with the snapshot's tokenizer and processor files, and the bounds they were trained with."""
    import shutil

    from huggingface_hub import constants

    from openvlt.models import copy_processor_files, load_processor

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--tiny-vl"
    shutil.copytree(tiny_student, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    copy_processor_files("org/tiny-vl", tmp_path / "ckpt", {"max_pixels": 3136})
    shutil.copy(tiny_student / "config.json", tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "tokenizer.json").read_bytes() == (tiny_student / "tokenizer.json").read_bytes()
    assert load_processor(tmp_path / "ckpt").image_processor.size.longest_edge == 3136
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="bare has no preprocessor_config.json or processor_config.json to keep the image size"):
        copy_processor_files(tmp_path / "bare", tmp_path / "other", {"max_pixels": 3136})


def test_a_text_only_model_refuses_image_size_bounds(tiny_reasoner):
    from openvlt.models import load_processor

    with pytest.raises(ValueError, match="is a text-only model: it reads no images, so max_pixels cannot apply to it"):
        load_processor(tiny_reasoner, max_pixels=3136)


def test_a_bound_that_crosses_the_folders_other_bound_is_refused(tiny_student):
    """max_pixels 1000 under the folder's min_pixels (3136) would resize every image up to 3136 pixels,
    over the bound asked for."""
    from openvlt.models import load_processor

    with pytest.raises(ValueError, match=r"with max_pixels: 1000 would resize images to at least min_pixels \(3136\), "
                                         r"above max_pixels \(1000\): set both bounds"):
        load_processor(tiny_student, max_pixels=1000)
    assert load_processor(tiny_student, max_pixels=1000, min_pixels=784).image_processor.size.longest_edge == 1000


def _png(size: tuple[int, int] = (84, 84)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, format="PNG")
    return buf.getvalue()


def test_a_model_save_that_fails_names_the_folder_and_gives_back_its_space(tmp_path, tiny_student):
    """safetensors and torch wrap a full disk in their own errors (a traceback naming no file); the
    half-written weights kept the space the manifest needed to record the failure."""
    from openvlt.backends.local import _save

    class FullDisk:
        def save_pretrained(self, out):
            (out / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("SafetensorError: Error while serializing: IoError(No space left on device)")

    out = tmp_path / ".model.partial"
    out.mkdir()
    with pytest.raises(OSError, match=rf"^writing the model to {out} failed: SafetensorError: .*No space left on device"):
        _save(FullDisk(), tiny_student, out, None)
    assert list(out.iterdir()) == []


def test_saved_weights_are_as_readable_as_any_other_file_the_run_writes(tmp_path, tiny_student):
    """safetensors writes 0600 whatever the umask: a teammate could read a checkpoint's config, not its weights."""
    import os

    from transformers import AutoModelForImageTextToText

    from openvlt.backends.local import _save

    out = tmp_path / "model"
    out.mkdir()
    old = os.umask(0o022)
    try:
        _save(AutoModelForImageTextToText.from_pretrained(tiny_student), tiny_student, out, None)
    finally:
        os.umask(old)
    assert oct((out / "model.safetensors").stat().st_mode & 0o777) == oct(0o644)
