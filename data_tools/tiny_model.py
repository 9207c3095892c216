"""Build a tiny, randomly initialised Qwen2.5-VL student, entirely offline.

    openvlt model tiny --out models/tiny-student [--hidden 128 --layers 2 ...]

The result is an ordinary Hugging Face folder: `AutoModelForImageTextToText` loads the model and
`AutoProcessor` the processor (with `trust_remote_code=True` on machines without torchvision; see
openvlt/models/qwen_processor.py). It has the Qwen2.5-VL architecture in miniature:

1. a byte-level BPE tokenizer trained in under a second on toy-world text plus generic maths text,
   with Qwen's pre-tokenizer (digits split one by one), Qwen's special tokens, and `<think>`,
   `</think>`, `<answer>`, `</answer>` as single tokens;
2. a Qwen2.5-VL chat template (no default system prompt: every token counts on a CPU);
3. a vision tower with 14 px patches merged 2x2, so a 28 px toy-world cell is one image token.

Defaults (text hidden 128, 2 layers; vision depth 2, hidden 64; ~0.6 M parameters) are what
STACK.md measured as learnable on 2 CPU cores in minutes.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
REASONING_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
CHAT_TEMPLATE = (  # one line on purpose: no whitespace control needed, no stray newlines
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXT_CHAT_TEMPLATE = (  # a text-only model's: each message's content is a string (as Qwen2.5's and R1's are)
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_GENERIC_TEXT = (
    "The answer is 42. Let x = 3, then 2x + 1 = 7. 0 1 2 3 4 5 6 7 8 9 10 100 1,000 3.14 -5 50% $20 "
    "\\frac{1}{2} \\sqrt{8} \\pi \\boxed{7} \\text{cm} ^{2} (A) (B) (C) (D) A. B. C. D. "
    "Question: Answer: Choices: What is the value of the angle in degrees? triangle square circle "
    "Wait, let me check again. But wait, so the total is First Second Third Therefore Hence "
)


@dataclass(frozen=True)
class TinySize:
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512
    vision_depth: int = 2
    vision_hidden: int = 64
    vision_heads: int = 4
    vocab: int = 640

    def problem(self) -> str | None:
        """Why a model of this size could not run (a build that succeeds would fail at its first forward
        pass), else None."""
        if self.hidden % self.heads or (self.hidden // self.heads) % 4:
            return f"hidden ({self.hidden}) / heads ({self.heads}) must be a multiple of 4"
        if self.heads % self.kv_heads:
            return f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})"
        if self.vision_hidden % self.vision_heads or (self.vision_hidden // self.vision_heads) % 2:
            return f"vision_hidden ({self.vision_hidden}) / vision_heads ({self.vision_heads}) must be an even whole number"
        return None


def build_tiny_student(out_dir: str | Path, size: TinySize = TinySize(), seed: int = 0) -> Path:
    """Write the tiny student's folder (model, tokenizer, processor, chat template) to `out_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from openvlt.models import qwen_processor

    if size.problem():
        raise ValueError(size.problem())
    head_dim = size.hidden // size.heads
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    tokenizer = _train_tokenizer(size.vocab, seed)
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    # mrope splits each head's rotary dims over (time, height, width); the sections sum to head_dim / 2
    t_dims = head_dim // 8
    rest = head_dim // 2 - t_dims
    mrope = [t_dims, rest - rest // 2, rest // 2]
    token_ids = dict(
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate,
            num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
            max_position_embeddings=4096, rope_scaling={"type": "mrope", "mrope_section": mrope},
            tie_word_embeddings=True, **token_ids,
        ),
        vision_config=dict(
            depth=size.vision_depth, hidden_size=size.vision_hidden, intermediate_size=2 * size.vision_hidden,
            num_heads=size.vision_heads, out_hidden_size=size.hidden, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, window_size=112, fullatt_block_indexes=[size.vision_depth - 1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True, **token_ids,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"], do_sample=False,
    )
    model.save_pretrained(tmp)

    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=224 * 224, patch_size=14, merge_size=2)
    processor = qwen_processor.Qwen2_5_VLProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(tmp)
    image_processor.save_pretrained(tmp)  # preprocessor_config.json too, for loaders that look there
    # Stock class name for machines with torchvision (vLLM, verl); auto_map for those without.
    processor_config = json.loads((tmp / "processor_config.json").read_text())
    processor_config.update(
        processor_class="Qwen2_5_VLProcessor", auto_map={"AutoProcessor": "processing_openvlt.Qwen2_5_VLProcessor"}
    )
    (tmp / "processor_config.json").write_text(json.dumps(processor_config, indent=2) + "\n")
    shutil.copy(qwen_processor.__file__, tmp / "processing_openvlt.py")
    (tmp / "openvlt_tiny.json").write_text(json.dumps({"size": asdict(size), "seed": seed}, indent=2) + "\n")

    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny student: %.2f M parameters, vocabulary %d", n_params / 1e6, len(tokenizer))  # callers say where
    return out


def build_tiny_reasoner(out_dir: str | Path, size: TinySize = TinySize(), seed: int = 0) -> Path:
    """Write a tiny random-init text-only language model (Qwen2) with the student's tokenizer: a
    stand-in for a text reasoner such as OpenVLThinker's R1-distilled Qwen, for tests on the hf engine."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    tokenizer = _train_tokenizer(size.vocab, seed)
    tokenizer.chat_template = TEXT_CHAT_TEMPLATE
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=None, eos_token_id=eos, pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, do_sample=False)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _train_tokenizer(vocab_size: int, seed: int):
    """Byte-level BPE on toy-world text + generic maths text, wrapped as a Qwen2Tokenizer."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(seed), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"], merges=merges, unk_token="<|endoftext|>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    return tokenizer


def _corpus(seed: int, n: int = 400) -> list[str]:
    """Text the student will read and write: toy-world questions, captions and teacher traces."""
    from data_tools.toyworld.captioner import write_caption
    from data_tools.toyworld.dataset import DEFAULT_KINDS
    from data_tools.toyworld.questions import sample_problem
    from data_tools.toyworld.reasoner import write_trace

    rng = random.Random(f"tokenizer/{seed}")
    texts = [_GENERIC_TEXT] * 20
    for i in range(n):
        scene, question, answer = sample_problem(rng, 3 + i % 2, DEFAULT_KINDS, 0.2)
        caption = write_caption(scene, rng)
        texts += [question.text(), caption, write_trace(f"{caption}\n{question.text()}", rng).text]
    return texts
