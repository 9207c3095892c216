"""The `hf` engine: transformers `generate` for CPU and small GPUs.

Batched (left padding), `n` samples per request, temperature / top-p / max tokens, seeded: the
same requests and sampling give the same texts. Works with the tiny student, with real
Qwen2.5-VL folders (processor loading without torchvision: openvlt.models.load_processor) and, for
prompts without images, with text-only language models (a reasoner).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from tqdm import tqdm

from openvlt.engines import Request, Sampling, check_hf_options
from openvlt.models import load_model, load_processor
from openvlt.models.batching import encode_prompts, prompt_lengths, template_prefill

log = logging.getLogger(__name__)


class HFEngine:
    def __init__(
        self, model: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 32, threads: int | None = None,
        max_pixels: int | None = None, min_pixels: int | None = None,
    ):
        """`max_pixels` / `min_pixels`: the image size bounds (Qwen2.5-VL processor arguments); the folder's own
        values otherwise."""
        check_hf_options(device, dtype, batch_size, threads, max_pixels, min_pixels)
        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(model, dtype=dtype, device=device)
        self.processor = load_processor(model, max_pixels, min_pixels)
        self.prefill = template_prefill(self.processor)
        self.batch_size = batch_size
        self.device = device

    @classmethod
    def from_loaded(cls, model: Any, processor: Any, batch_size: int = 32) -> "HFEngine":
        """Wrap a model already in memory (e.g. the policy inside a training loop)."""
        engine = cls.__new__(cls)
        engine.model, engine.processor, engine.batch_size = model, processor, batch_size
        engine.prefill = template_prefill(processor)
        engine.device = str(next(model.parameters()).device)
        return engine

    def generate(self, requests: Sequence[Request], sampling: Sampling, progress: bool = False) -> list[list[str]]:
        texts, _ = self.generate_ids(requests, sampling, progress=progress)
        return texts

    @torch.no_grad()
    def generate_ids(
        self, requests: Sequence[Request], sampling: Sampling, progress: bool = False
    ) -> tuple[list[list[str]], list[list[list[int]]]]:
        """Texts and their token ids, n per request. The ids end with the stop token when the model
        stopped (a policy must learn to stop), the texts do not; padding is removed from both. A text
        begins with what the chat template opened the answer with (`<think>` for R1-style templates)."""
        if not requests:
            return [], []
        tokenizer = self.processor.tokenizer
        stop_ids = set(_stop_ids(self.model, tokenizer))
        never = _vision_token_ids(self.model)
        texts: list[list[str]] = [[] for _ in requests]
        ids: list[list[list[int]]] = [[] for _ in requests]
        # A batch is padded to its longest prompt and runs until its longest answer ends, so requests
        # go in batches of like prompt lengths (like questions tend to get like-sized answers): the
        # embedded default generates twice as fast as in data order. Results come back in request order.
        lengths = prompt_lengths(self.processor, [r.prompt for r in requests], [r.images for r in requests],
                                 [r.system for r in requests])
        order = sorted(range(len(requests)), key=lengths.__getitem__)
        greedy = sampling.temperature == 0
        calls = _generate_calls(order, 1 if greedy else sampling.n, self.batch_size)
        was_training = self.model.training
        self.model.eval()
        try:
            for k, (where, count) in enumerate(tqdm(calls, desc="generate", unit="batch", disable=not progress)):
                chunk = [requests[i] for i in where]
                batch = encode_prompts(self.processor, [r.prompt for r in chunk], [r.images for r in chunk], [r.system for r in chunk])
                batch = {key: value.to(self.device) for key, value in batch.items()}
                torch.manual_seed((sampling.seed * 1_000_003 + k) % 2**63)  # (torch takes seeds below 2**64)
                out = self.model.generate(
                    **batch,
                    max_new_tokens=sampling.max_tokens,
                    do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p,
                    top_k=None,
                    num_return_sequences=count,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=sorted(stop_ids),
                    suppress_tokens=never or None,
                    **_PLAIN_SAMPLING,
                )
                generated = out[:, batch["input_ids"].shape[1] :].tolist()
                for i, request_index in enumerate(where):
                    rows = [_trim(g, stop_ids) for g in generated[i * count : (i + 1) * count]]
                    decoded = [self.prefill + tokenizer.decode(r, skip_special_tokens=True) for r in rows]
                    if greedy:  # n identical greedy samples: generated and decoded once, copied
                        rows, decoded = [list(rows[0]) for _ in range(sampling.n)], decoded * sampling.n
                    ids[request_index] += rows
                    texts[request_index] += decoded
        finally:
            self.model.train(was_training)
        return texts, ids


# What a model folder's generation_config.json may set beyond temperature / top-p (Qwen2.5-VL-Instruct
# ships repetition_penalty 1.05), switched off: greedy evaluation must be greedy, and GRPO's rollouts
# must come from the distribution whose log-probabilities its loss takes.
_PLAIN_SAMPLING: dict[str, Any] = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": None, "typical_p": 1.0, "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0, "min_p": None, "top_h": None, "num_beams": 1, "bad_words_ids": None, "sequence_bias": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "exponential_decay_length_penalty": None,
    "begin_suppress_tokens": None, "renormalize_logits": False, "guidance_scale": None, "penalty_alpha": None,
    "dola_layers": None, "prompt_lookup_num_tokens": None,
    "stop_strings": None, "max_time": None,  # a folder's stop strings or time limit would cut answers short
}


def _generate_calls(order: list[int], per_request: int, batch_size: int) -> list[tuple[list[int], int]]:
    """(requests, samples of each) per generate call, about `batch_size` sequences a call whatever n is:
    several requests' samples in one call, or, when one request asks for more than `batch_size`, its
    samples over several calls (GPU memory is what `batch_size` bounds).

    >>> _generate_calls([0, 1, 2], 2, 4)
    [([0, 1], 2), ([2], 2)]
    >>> _generate_calls([0, 1], 5, 2)
    [([0], 2), ([0], 2), ([0], 1), ([1], 2), ([1], 2), ([1], 1)]
    """
    if per_request <= batch_size:
        step = batch_size // per_request
        return [(order[start : start + step], per_request) for start in range(0, len(order), step)]
    return [([i], min(batch_size, per_request - done)) for i in order for done in range(0, per_request, batch_size)]


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


def _vision_token_ids(model: Any) -> list[int]:
    """Image/video placeholder tokens: a model must never write them (the processor expands them
    into image slots, so a sampled one would break the next forward pass)."""
    config = model.config
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return sorted({getattr(config, n) for n in names if isinstance(getattr(config, n, None), int)})


def _trim(tokens: list[int], stop_ids: set[int]) -> list[int]:
    """Generated tokens up to and including the first stop token; what follows is padding."""
    for i, t in enumerate(tokens):
        if t in stop_ids:
            return tokens[: i + 1]
    return tokens
