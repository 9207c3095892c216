"""An image-and-text Qwen2.5-VL processor that does not need torchvision.

transformers 5.10's stock `Qwen2_5_VLProcessor` insists on a video processor, and every video
processor needs torchvision, which has no CPU build on our machines. This subclass drops the video
processor and keeps everything else (same class name, so code that matches processors by name,
such as verl's, treats it as Qwen2.5-VL).

This file is self-contained on purpose: the tiny-model builder copies it into model folders as
`processing_openvlt.py` (referenced by `auto_map`), so that
`AutoProcessor.from_pretrained(folder, trust_remote_code=True)` works on CPU-only machines,
while machines with torchvision load the stock processor from the same folder.
"""
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor as _StockQwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin


class Qwen2_5_VLProcessor(_StockQwen2_5_VLProcessor):
    """Qwen2.5-VL processor for images and text only (no video processor, no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
