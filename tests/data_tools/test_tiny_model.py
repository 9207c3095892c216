"""The tiny student: an ordinary Hugging Face folder that loads offline, generates and trains."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from data_tools.tiny_model import TinySize, build_tiny_student

from ..conftest import OPENVLT

ROUND_TRIP = textwrap.dedent("""
    import io, json, sys
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, image_path = sys.argv[1], sys.argv[2]
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)  # no torchvision here
    image = Image.open(image_path).convert("RGB")
    messages = [{"role": "user", "content": [{"type": "text", "text": "How many red shapes are there?"}, {"type": "image"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new_tokens = out.shape[1] - inputs["input_ids"].shape[1]
    ids = inputs["input_ids"]  # greedy by hand, the whole sequence each step (no cache): what generate must match
    while ids.shape[1] < inputs["input_ids"].shape[1] + 8 and (ids.shape[1] == inputs["input_ids"].shape[1]
                                                                or ids[0, -1] != model.generation_config.eos_token_id):
        with torch.no_grad():
            logits = model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids),
                              "mm_token_type_ids": torch.nn.functional.pad(inputs["mm_token_type_ids"],
                                                                           (0, ids.shape[1] - inputs["input_ids"].shape[1]))}).logits
        ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    by_hand = ids[0, inputs["input_ids"].shape[1]:].tolist() == out[0, inputs["input_ids"].shape[1]:].tolist()

    full = processor(text=[prompt + "<think>red shapes: 1 + 0 + 2 = 3.</think> <answer>3</answer><|im_end|>"],
                     images=[image], return_tensors="pt")
    labels = full["input_ids"].clone()
    labels[:, : inputs["input_ids"].shape[1]] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = model(**full, labels=labels).loss
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        losses.append(loss.item())
    model.save_pretrained(folder + "-trained")
    again = AutoModelForImageTextToText.from_pretrained(folder + "-trained")
    same = torch.allclose(again(**full).logits, model(**full).logits, atol=1e-5)
    print(json.dumps({"processor": type(processor).__name__, "image_tokens": n_image_tokens,
                      "new_tokens": new_tokens, "by_hand": by_hand, "losses": losses, "reloaded_equal": same}))
""")


def test_folder_is_a_standard_qwen2_5_vl_checkpoint(tiny_student):
    config = json.loads((tiny_student / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    processor = json.loads((tiny_student / "processor_config.json").read_text())
    assert processor["processor_class"] == "Qwen2_5_VLProcessor"  # what verl and vLLM match on
    assert processor["auto_map"]["AutoProcessor"] == "processing_openvlt.Qwen2_5_VLProcessor"
    for name in ("model.safetensors", "tokenizer.json", "chat_template.jinja", "preprocessor_config.json",
                 "generation_config.json", "processing_openvlt.py"):
        assert (tiny_student / name).exists(), name


def test_offline_load_generate_train_save_round_trip(tiny_student, toyworld_dir, tmp_path):
    from openvlt.records import read_records

    image = tmp_path / "scene.png"
    image.write_bytes(read_records(toyworld_dir / "test.parquet")[0]["images"][0])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(tiny_student), str(image)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["processor"] == "Qwen2_5_VLProcessor"
    assert result["image_tokens"] == 9  # 84 px scene = 3x3 cells of 28 px = 9 merged tokens
    assert 1 <= result["new_tokens"] <= 8 and result["by_hand"]  # generate with the image = greedy by hand
    assert result["losses"][-1] < result["losses"][0] - 0.1  # training on one example lowers its loss
    assert result["reloaded_equal"]


def test_tokenizer_keeps_reasoning_tags_whole_and_splits_digits(tiny_student):
    from openvlt.models import load_processor

    tokenizer = load_processor(tiny_student).tokenizer
    tokens = tokenizer.tokenize("<think>12 red circles</think> <answer>12</answer>")
    assert tokens[0] == "<think>" and "</think>" in tokens and "<answer>" in tokens
    assert "12" not in tokens and tokens.count("1") == 2  # digits one by one, as in Qwen
    text = "Row 1: red circle, empty. \\frac{1}{2} é ü 😀"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: any text round-trips


def test_cli_builds_a_student(tmp_path):
    done = subprocess.run(
        [OPENVLT, "model", "tiny", "--out", str(tmp_path / "m"), "--hidden", "32", "--intermediate", "64", "--vision-hidden", "32"],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == 32 and config["vision_config"]["hidden_size"] == 32
    bad = subprocess.run([OPENVLT, "model", "tiny", "--out", str(tmp_path / "n"), "--hidden", "30"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "must be a multiple of 4" in bad.stderr
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("size, message", [
    (TinySize(hidden=72, heads=4), r"hidden \(72\) / heads \(4\) must be a multiple of 4"),
    (TinySize(kv_heads=3), r"heads \(4\) must be a multiple of kv_heads \(3\)"),
    (TinySize(vision_heads=3), r"vision_hidden \(64\) / vision_heads \(3\) must be an even whole number"),
])
def test_a_size_that_could_not_run_is_refused_before_anything_is_written(tmp_path, size, message):
    """Such a folder used to build, then fail at its first forward pass (in the run's first evaluation)."""
    with pytest.raises(ValueError, match=message):
        build_tiny_student(tmp_path / "m", size)
    assert not (tmp_path / "m").exists()
