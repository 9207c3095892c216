"""Loading Hugging Face model folders on any machine: VLMs (the tiny student, real Qwen2.5-VL
checkpoints) and text-only language models (a reasoner such as OpenVLThinker's R1-distilled Qwen)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Everything in a model folder except weights: what a training stage copies from its init model.
PROCESSOR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "added_tokens.json", "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
    "processor_config.json", "video_preprocessor_config.json", "processing_openvlt.py", "generation_config.json",
)


def load_processor(path: str | Path, max_pixels: int | None = None, min_pixels: int | None = None) -> Any:
    """The folder's processor: the stock one where it loads, else an image-only Qwen2.5-VL one; for a
    text-only model, its tokenizer in a `TextOnlyProcessor`.

    `max_pixels` / `min_pixels` bound the size each image is resized to (Qwen2.5-VL's processor
    arguments; the folder's own values otherwise), and so its number of image tokens.

    Without torchvision the stock Qwen2.5-VL processor cannot be built (its video processor needs
    torchvision); then folders with our `auto_map` load through it, and other Qwen2.5-VL folders
    (e.g. hub checkpoints) get `openvlt.models.qwen_processor.Qwen2_5_VLProcessor` assembled from
    their tokenizer and image processor.

    A tokenizer without a pad token pads with its end-of-text token (batches need one; attention
    masks and labels leave padding out, so which token it is does not matter).
    """
    bounds = pixel_bounds(max_pixels, min_pixels)
    if not reads_images(path):
        if bounds:
            raise ValueError(f"{path} is a text-only model: it reads no images, so {', '.join(bounds)} cannot apply to it")
        processor: Any = TextOnlyProcessor(str(path))
    else:
        processor = _processor(str(path), bounds)
        _check_pixel_bounds(processor, path, bounds)
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        log.info("%s: the tokenizer has no pad token; padding with %r", path, tokenizer.eos_token)
    return processor


def _check_pixel_bounds(processor: Any, path: str | Path, bounds: dict[str, int]) -> None:
    """One bound given, the other the folder's: `max_pixels` below the folder's `min_pixels` would resize
    every image up to that minimum, over the bound asked for (its tokens over any length budget set by it)."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    low, high = getattr(size, "shortest_edge", None), getattr(size, "longest_edge", None)  # (Qwen2-VL's names for them)
    if isinstance(low, int) and isinstance(high, int) and low > high:
        given = ", ".join(f"{name}: {value}" for name, value in bounds.items()) or "its own values"
        raise ValueError(f"{path} with {given} would resize images to at least min_pixels ({low}), above max_pixels "
                         f"({high}): set both bounds")


def pixel_bounds(max_pixels: int | None = None, min_pixels: int | None = None) -> dict[str, int]:
    """The image size bounds that are set, as processor arguments."""
    return {name: value for name, value in (("max_pixels", max_pixels), ("min_pixels", min_pixels)) if value is not None}


def _processor(path: str, bounds: dict[str, int]) -> Any:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, **bounds)
    except (ImportError, ValueError) as exc:
        if "torchvision" not in str(exc).lower():
            raise
    if Path(path, "processing_openvlt.py").exists():
        return AutoProcessor.from_pretrained(path, trust_remote_code=True, **bounds)
    from transformers import AutoTokenizer
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    from openvlt.models.qwen_processor import Qwen2_5_VLProcessor

    tokenizer = AutoTokenizer.from_pretrained(path)
    log.info("%s: torchvision is not installed; using the image-only Qwen2.5-VL processor", path)
    return Qwen2_5_VLProcessor(AutoImageProcessor.from_pretrained(path, **bounds), tokenizer,
                               chat_template=tokenizer.chat_template or _chat_template_file(path))


def lacks_chat_template(model: str | Path) -> bool:
    """Whether a model folder (or a cached hub name) has a tokenizer but no chat template, read from
    its files without loading them: tokenizer_config.json's `chat_template`, or a template file. A
    folder without tokenizer_config.json is not judged here (its loader names what is missing)."""
    import json

    folder = model_folder(model)
    try:
        config = json.loads(Path(folder, "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return not (isinstance(config, dict) and config.get("chat_template")) and not _chat_template_file(str(folder))


def no_chat_template(path: str | Path) -> str:
    return (f"{path} has no chat template (a base model?): openvlt prompts every model as a chat; "
            "use an instruct or reasoning model, or add chat_template.jinja to the folder")


def _chat_template_file(path: str) -> str | None:
    """The template a processor folder keeps beside the tokenizer (chat_template.jinja or .json)."""
    import json

    if Path(path, "chat_template.jinja").exists():
        return Path(path, "chat_template.jinja").read_text(encoding="utf-8")
    if Path(path, "chat_template.json").exists():
        return json.loads(Path(path, "chat_template.json").read_text()).get("chat_template")
    return None


def load_model(path: str | Path, dtype: str = "float32", device: str = "cpu") -> Any:
    """An image-text-to-text model, or a causal language model for a text-only folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    config = _config(path)
    auto = AutoModelForImageTextToText if _image_text_to_text(config) else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(str(path), dtype=getattr(torch, dtype))
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        raise ValueError(f"{path}: a {config.model_type!r} model is neither an image-text-to-text model nor a "
                         "causal language model, which are what openvlt generates with and trains") from None
    return model.to(device)


def context_length(path: str | Path) -> int | None:
    """How many tokens the folder's language model takes (`max_position_embeddings`), if it says."""
    return getattr(_config(path).get_text_config(), "max_position_embeddings", None)  # a VLM's: its language model's


def reads_images(path: str | Path) -> bool:
    """Whether the folder's model takes images: an image-text-to-text model, or one with a vision
    tower in its config (some multimodal models load as causal language models)."""
    config = _config(path)
    return _image_text_to_text(config) or hasattr(config, "vision_config")


def _image_text_to_text(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


class UnreadableModelFolder(ValueError):
    """A folder openvlt will not load as a model; the message begins with the folder."""


def _config(path: str | Path) -> Any:
    """The folder's config. A config that needs the folder's own Python code (`auto_map`, e.g. InternVL
    or MiniCPM-V checkpoints) is refused rather than run: transformers would otherwise stop to ask on the
    terminal, and openvlt trains and generates with the model classes transformers ships."""
    from transformers import AutoConfig

    if Path(path).is_dir() and not Path(path, "config.json").is_file():
        raise UnreadableModelFolder(f"{path} has no config.json: is it a model folder (or the folder above one)?")
    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
    raise UnreadableModelFolder(
        f"{path} is not a model folder transformers can read: its config.json needs the model's own Python code "
        "(auto_map, transformers' trust_remote_code), which openvlt does not run: bind a model whose class "
        "transformers ships (an image-text-to-text model such as Qwen2.5-VL; for the reasoner, any causal language model)")


class TextOnlyProcessor:
    """A text-only model's tokenizer with the processor calls the engines make, so every model is
    prompted the same way. It refuses images instead of dropping them: a model that is asked about an
    image it never sees answers anyway."""

    text_only = True

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self.name = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if not self.tokenizer.chat_template:
            self.tokenizer.chat_template = _chat_template_file(path)
        if not self.tokenizer.chat_template:
            raise ValueError(no_chat_template(path))

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(self, text: list[str], images: Any = None, **kwargs: Any) -> Any:
        if images:
            raise ValueError(f"{self.name} is a text-only model: it cannot read the {len(images)} image(s) it was given")
        return self.tokenizer(text, **kwargs)


def copy_processor_files(src: str | Path, dst: str | Path, bounds: dict[str, int] | None = None) -> None:
    """Copy tokenizer/processor/generation files so `dst` is a complete, loadable model folder.

    `src` may be a hub name in the Hugging Face cache. `bounds` (`max_pixels` / `min_pixels`, as the
    model was trained with) are written into the image processor's config, so that whoever loads the
    folder, openvlt or plain transformers, shows the model images at the size it learned from."""
    os.makedirs(dst, exist_ok=True)
    src = model_folder(src)
    for name in PROCESSOR_FILES:
        if Path(src, name).exists():
            shutil.copy2(Path(src, name), Path(dst, name))
    if bounds and not _write_pixel_bounds(Path(dst), bounds):
        raise ValueError(f"{src} has no preprocessor_config.json or processor_config.json to keep the image size bounds in")


def model_folder(model: str | Path) -> Path:
    """Where a model's files are: the folder itself, or a hub name's snapshot in the Hugging Face cache
    (which loading it has filled)."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(model), local_files_only=True))


def _write_pixel_bounds(folder: Path, bounds: dict[str, int]) -> int:
    """Set the image processor's bounds where transformers reads them: preprocessor_config.json (older
    folders, e.g. the hub's Qwen2.5-VL) and the `image_processor` part of processor_config.json (folders
    saved by transformers 5, read first). Returns how many files took them."""
    import json

    written = 0
    for name, part in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = folder / name
        if not path.exists():
            continue
        whole = json.loads(path.read_text())
        config = whole.get(part) if part else whole
        if not isinstance(config, dict):
            continue
        config.update(bounds)  # read before `size` by the Qwen2-VL image processors
        size = config.get("size")
        if isinstance(size, dict) and {"shortest_edge", "longest_edge"} <= set(size):  # the same values, for readers of `size`
            size.update({{"min_pixels": "shortest_edge", "max_pixels": "longest_edge"}[k]: v for k, v in bounds.items()})
        path.write_text(json.dumps(whole, indent=2) + "\n")
        written += 1
    return written
