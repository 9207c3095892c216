"""SFT: train the BASE student on the selected traces (image + question -> trace).

As in OpenVLThinker, every iteration starts again from the base model rather than from the last
checkpoint: the data get better each iteration, the starting point stays the same. Loss is on the
assistant tokens only (openvlt.models.batching.encode_examples). Examples longer than `sft.max_length`
(or the student's context) are left out and counted, not cut: a cut trace teaches a truncated answer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from openvlt.backends import SFTConfig, get_backend
from openvlt.stages.common import keep_within_length, saved_before, student_request, training_curve


def train_sft(
    selected: Sequence[dict[str, Any]],
    base_model: str | Path,
    out_dir: str | Path,
    *,
    config: SFTConfig,
    backend: str = "local",
    options: dict[str, Any] | None = None,
    pixel_bounds: dict[str, int] | None = None,
    prompt: str = "{question}",
    system: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a Hugging Face model folder to `out_dir`; return counts (examples, too long, steps, losses).
    `pixel_bounds`: the student's image size bounds (`max_pixels` / `min_pixels`), kept in the folder."""
    if not selected:
        raise ValueError("no SFT examples to train on")  # (select stops first when it keeps no problem)
    examples = []
    for row in selected:
        request = student_request(row, prompt, system)
        examples.append({"prompt": request.prompt, "images": request.images, "response": row["response"], "system": system,
                         "id": row["id"]})
    kept, too_long = keep_within_length(examples, base_model, pixel_bounds, config.max_length, "sft.max_length", "SFT examples")
    trainer = get_backend(backend)
    if not saved_before(trainer, out_dir):
        trainer.sft(kept, base_model, out_dir, config, seed=seed, options=options, pixel_bounds=pixel_bounds)
    curve = training_curve(out_dir)
    return {"in": len(examples), "too_long": too_long, "steps": len(curve), "first_loss": curve[0]["loss"],
            "final_loss": curve[-1]["loss"]}
