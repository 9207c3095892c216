"""Turning (prompt, images, response) triples into model tensors, identically for every user.

Generation (hf engine), SFT and GRPO (local backend) all build prompts here, so the tokens a
model is trained on are exactly the tokens it is later prompted with.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from openvlt.records import IMAGE_PLACEHOLDER, image_size, load_image

IGNORE_INDEX = -100


def chat_text(processor: Any, prompt: str, system: str | None = None) -> str:
    """The templated prompt (ending with the assistant header) for one user turn."""
    return processor.apply_chat_template(_messages(processor, prompt, system), add_generation_prompt=True, tokenize=False)


def template_prefill(processor: Any) -> str:
    """The start of the answer that the chat template writes itself, after the assistant header: an
    opened `<think>` (DeepSeek-R1-Distill's template ends the generation prompt with "<think>\\n"). The
    model continues it, so a trace made from the model's output must begin with it."""
    without = processor.apply_chat_template(_messages(processor, "x"), add_generation_prompt=False, tokenize=False)
    added = chat_text(processor, "x").removeprefix(without)
    at = added.rfind("<think>")
    return added[at:] if at >= 0 and "</think>" not in added[at:] else ""


def _messages(processor: Any, prompt: str, system: str | None = None) -> list[dict[str, Any]]:
    """The chat for one user turn. Each `<image>` in `prompt` becomes an image part at that position of
    the user message; a text-only model's message is a plain string, as its chat template expects."""
    pieces = prompt.split(IMAGE_PLACEHOLDER)
    content: list[dict[str, str]] | str
    if getattr(processor, "text_only", False):
        if len(pieces) > 1:
            raise ValueError(f"{processor.name} is a text-only model, but the prompt has {len(pieces) - 1} "
                             f"{IMAGE_PLACEHOLDER} placeholder(s): {prompt[:200]!r}")
        content = _as_text(processor.tokenizer, prompt)
    else:
        content = []
        for i, piece in enumerate(pieces):
            if piece:
                content.append({"type": "text", "text": _as_text(processor.tokenizer, piece)})
            if i < len(pieces) - 1:
                content.append({"type": "image"})
    system = _as_text(processor.tokenizer, system) if system else None
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]


def _as_text(tokenizer: Any, text: str) -> str:
    """`text` with each control-token string (`<|im_end|>`, `<|image_pad|>`, ...) broken by an invisible
    word joiner, so it reaches the model as characters instead of ending the turn or claiming an image
    slot. Prompts carry captions and questions, which are model output or user data: untrusted.

    (A prompt goes through the processor as one string, which must keep the template's own control
    tokens, so it cannot be tokenized with `split_special_tokens` as responses are: the same text has
    other tokens in a prompt than in a response. Only such hostile text is affected.)"""
    specials = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special and len(t.content) > 1]
    for token in specials:
        if token in text:
            text = text.replace(token, token[0] + "\u2060" + token[1:])
    return text


def response_ids(tokenizer: Any, response: str) -> list[int]:
    """A response's token ids as SFT trains on them (and select's length cap counts them): plain text,
    so a trace that spells `<|im_end|>` or `<|image_pad|>` is those characters, not a control token."""
    return tokenizer(response, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def encode_prompts(
    processor: Any, prompts: Sequence[str], images: Sequence[Sequence[bytes]], systems: Sequence[str | None] | None = None
) -> dict[str, torch.Tensor]:
    """Left-padded prompt batch, ready for `model.generate`."""
    texts = _chat_texts(processor, prompts, systems)
    return _encode(processor, texts, images, padding_side="left")


def prompt_lengths(
    processor: Any, prompts: Sequence[str], images: Sequence[Sequence[bytes]], systems: Sequence[str | None] | None = None
) -> list[int]:
    """Each prompt's length in tokens, without running the image processor: an image counts the
    tokens its size gives (`_get_num_multimodal_tokens`, as vLLM counts them), or 0 for a processor
    that cannot say. Cheap enough to order thousands of requests before batching them."""
    texts = _chat_texts(processor, prompts, systems)
    lengths = [len(ids) for ids in processor.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    count_image_tokens = getattr(processor, "_get_num_multimodal_tokens", None)
    for i, ims in enumerate(images):
        if ims and count_image_tokens is not None:
            sizes = [image_size(im) for im in ims]
            # each image's one placeholder token in the text becomes its image tokens
            lengths[i] += sum(count_image_tokens(image_sizes=sizes)["num_image_tokens"]) - len(ims)
    return lengths


def example_lengths(
    processor: Any,
    prompts: Sequence[str],
    images: Sequence[Sequence[bytes]],
    responses: Sequence[str],
    systems: Sequence[str | None] | None = None,
) -> list[int]:
    """Each example's length in tokens as `encode_examples` builds it (prompt with its image tokens,
    response, end of turn), counted without running the image processor, as `prompt_lengths` does."""
    prefill = template_prefill(processor)
    return [n + len(response_ids(processor.tokenizer, _after_prefill(response, prefill))) + 1
            for n, response in zip(prompt_lengths(processor, prompts, images, systems), responses)]


def encode_examples(
    processor: Any,
    prompts: Sequence[str],
    images: Sequence[Sequence[bytes]],
    responses: Sequence[str],
    systems: Sequence[str | None] | None = None,
) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response batch with `labels` on the response tokens only.

    The response (`response_ids`: plain text) is followed by the end-of-turn token, which is learned
    too (the model must learn to stop). Prompt and response are tokenized apart, as generation sees them.
    When the chat template opens the answer itself (`template_prefill`), that opening is part of the
    prompt, so it is taken off a response that begins with it rather than trained on twice.
    """
    tokenizer = processor.tokenizer
    prefill = template_prefill(processor)
    if tokenizer.eos_token_id is None:
        raise ValueError("the student's tokenizer has no eos_token: SFT could not teach the model to end its turn "
                         "(set eos_token in its tokenizer_config.json)")
    rows = []
    for i, (prompt, ims, response) in enumerate(zip(prompts, images, responses)):
        encoded = _encode(processor, [chat_text(processor, prompt, systems[i] if systems else None)], [ims], padding_side="right")
        ids = torch.tensor([response_ids(tokenizer, _after_prefill(response, prefill)) + [tokenizer.eos_token_id]],
                           dtype=torch.long)
        row = _with_response(encoded, ids)
        row["labels"] = torch.cat([torch.full_like(encoded["input_ids"], IGNORE_INDEX), ids], dim=1)
        rows.append(row)
    return collate(rows, tokenizer.pad_token_id)


def _after_prefill(response: str, prefill: str) -> str:
    """What the model writes after a prompt that ends with `prefill`: a trace the engine returned starts
    with the prefill exactly; another model's trace may start with the tag alone ("<think>Count...")."""
    if prefill and response.startswith(prefill):
        return response[len(prefill):]
    opening = prefill.strip()
    return response[len(opening):].lstrip() if opening and response.startswith(opening) else response


def _with_response(prompt: dict[str, torch.Tensor], response: torch.Tensor) -> dict[str, torch.Tensor]:
    """One encoded prompt (batch of 1) followed by `response` (1, L) token ids, images kept."""
    row = {
        "input_ids": torch.cat([prompt["input_ids"], response], dim=1),
        "attention_mask": torch.ones(1, prompt["input_ids"].shape[1] + response.shape[1], dtype=torch.long),
    }
    if "mm_token_type_ids" in prompt:
        row["mm_token_type_ids"] = torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(response)], dim=1)
    if "pixel_values" in prompt:
        row["pixel_values"], row["image_grid_thw"] = prompt["pixel_values"], prompt["image_grid_thw"]
    return row


def _chat_texts(processor: Any, prompts: Sequence[str], systems: Sequence[str | None] | None) -> list[str]:
    return [chat_text(processor, p, s) for p, s in zip(prompts, systems or [None] * len(prompts))]


def _encode(processor: Any, texts: Sequence[str], images: Sequence[Sequence[bytes]], padding_side: str):
    flat = [load_image(im) for ims in images for im in ims]
    processor.tokenizer.padding_side = padding_side
    # the chat template wrote the special tokens (a BOS too, for templates that have one): add none twice
    kwargs: dict[str, Any] = {"text": list(texts), "padding": True, "return_tensors": "pt", "add_special_tokens": False}
    if flat:
        kwargs["images"] = flat
    encoded = processor(**kwargs)
    # keep mm_token_type_ids: Qwen2.5-VL needs it to give image tokens their 2-D (mrope) positions
    return dict(encoded)


def collate(examples: Sequence[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad single-example encodings (from `encode_examples` with one row each) into a batch."""
    width = max(e["input_ids"].shape[1] for e in examples)
    fills = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX, "mm_token_type_ids": 0}
    batch: dict[str, torch.Tensor] = {}
    for key, fill in fills.items():
        if any(key in e for e in examples):  # a text-only row may lack mm_token_type_ids: all its tokens are text (0)
            batch[key] = torch.cat([torch.nn.functional.pad(
                e[key] if key in e else torch.full_like(e["input_ids"], fill), (0, width - e["input_ids"].shape[1]), value=fill)
                for e in examples])
    for key in ("pixel_values", "image_grid_thw"):  # per image, in row order; text-only rows add none
        if any(key in e for e in examples):
            batch[key] = torch.cat([e[key] for e in examples if key in e])
    return batch


def encode_rollouts(
    processor: Any,
    prompts: Sequence[str],
    images: Sequence[Sequence[bytes]],
    responses: Sequence[Sequence[int]],
    rollouts: int,
    systems: Sequence[str | None] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each prompt (encoded once) followed by each of its `rollouts` generated responses (token ids).

    Returns the right-padded batch, `resp_pos` (B, R): the position in the shifted logits that predicts
    response token j, and `resp_mask` (B, R): 1 where response token j exists. A prompt's image patches
    are held once, not once per rollout (at a real image size, 24 MB an image: 8 rollouts would hold 8
    copies): `row_patches` / `row_grids` (B, 2) give each row's span of `pixel_values` / `image_grid_thw`,
    which `_rows` of the local backend gathers for a micro-batch.
    """
    rows, prompt_lens, row_patches, row_grids, pixels, grids = [], [], [], [], [], []
    patches = images_so_far = 0
    for i, (prompt, ims) in enumerate(zip(prompts, images)):
        system = systems[i] if systems else None
        enc = _encode(processor, [chat_text(processor, prompt, system)], [ims], padding_side="right")
        first_patch, first_image = patches, images_so_far
        if "pixel_values" in enc:  # (a text-only prompt has none: an empty span)
            pixels.append(enc.pop("pixel_values"))
            grids.append(enc.pop("image_grid_thw"))
            patches, images_so_far = patches + pixels[-1].shape[0], images_so_far + grids[-1].shape[0]
        patch_span, grid_span = [first_patch, patches], [first_image, images_so_far]
        for r in range(rollouts):
            response = torch.tensor([list(responses[i * rollouts + r])], dtype=torch.long)
            if (response == processor.image_token_id).any():
                raise ValueError("a generated response contains the image placeholder token; the engine must suppress it")
            rows.append(_with_response(enc, response))
            prompt_lens.append(enc["input_ids"].shape[1])
            row_patches.append(patch_span)
            row_grids.append(grid_span)
    batch = collate(rows, processor.tokenizer.pad_token_id)
    if pixels:
        batch |= {"pixel_values": torch.cat(pixels), "image_grid_thw": torch.cat(grids),
                  "row_patches": torch.tensor(row_patches), "row_grids": torch.tensor(row_grids)}
    lengths = torch.tensor([len(r) for r in responses])
    width = max(1, int(lengths.max()))
    j = torch.arange(width)[None, :]
    resp_pos = (torch.tensor(prompt_lens)[:, None] - 1 + j).clamp(max=batch["input_ids"].shape[1] - 2)
    resp_mask = (j < lengths[:, None]).long()
    return batch, resp_pos, resp_mask
