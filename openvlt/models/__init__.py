"""Loading Hugging Face VLM folders (the tiny student, real Qwen2.5-VL checkpoints) on any machine."""
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


def load_processor(path: str | Path) -> Any:
    """The folder's processor: the stock one where it loads, else an image-only Qwen2.5-VL one.

    Without torchvision the stock Qwen2.5-VL processor cannot be built (its video processor needs
    torchvision); then folders with our `auto_map` load through it, and other Qwen2.5-VL folders
    (e.g. hub checkpoints) get `openvlt.models.qwen_processor.Qwen2_5_VLProcessor` assembled from
    their tokenizer and image processor.
    """
    from transformers import AutoProcessor

    path = str(path)
    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, ValueError) as exc:
        if "torchvision" not in str(exc).lower():
            raise
    if Path(path, "processing_openvlt.py").exists():
        return AutoProcessor.from_pretrained(path, trust_remote_code=True)
    from transformers import AutoTokenizer
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    from openvlt.models.qwen_processor import Qwen2_5_VLProcessor

    tokenizer = AutoTokenizer.from_pretrained(path)
    log.info("%s: torchvision is not installed; using the image-only Qwen2.5-VL processor", path)
    return Qwen2_5_VLProcessor(AutoImageProcessor.from_pretrained(path), tokenizer, chat_template=tokenizer.chat_template)


def load_model(path: str | Path, dtype: str = "float32", device: str = "cpu") -> Any:
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=getattr(torch, dtype))
    return model.to(device)


def copy_processor_files(src: str | Path, dst: str | Path) -> None:
    """Copy tokenizer/processor/generation files so `dst` is a complete, loadable model folder."""
    os.makedirs(dst, exist_ok=True)
    for name in PROCESSOR_FILES:
        if Path(src, name).exists():
            shutil.copy2(Path(src, name), Path(dst, name))
