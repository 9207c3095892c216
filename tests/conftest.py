"""Shared fixtures: a small toy world, a tiny student and a tiny text reasoner, each built once per test session.

Everything runs offline on the CPU: HF_HUB_OFFLINE is set before transformers is imported.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPENVLT = str(Path(sys.executable).with_name("openvlt"))  # the console script of this environment


@pytest.fixture(scope="session")
def toyworld_dir(tmp_path_factory) -> Path:
    """120 train + 40 test problems on a 3x3 grid, seed 0."""
    from data_tools.toyworld.dataset import build_toyworld

    out = tmp_path_factory.mktemp("toyworld")
    build_toyworld(out, n_train=120, n_test=40, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    """A tiny random-init student (smaller than the default, for speed)."""
    from data_tools.tiny_model import TinySize, build_tiny_student

    return build_tiny_student(tmp_path_factory.mktemp("models") / "tiny", TinySize(hidden=64, intermediate=128, vocab=600))


@pytest.fixture(scope="session")
def tiny_reasoner(tmp_path_factory) -> Path:
    """A tiny random-init text-only language model (Qwen2), as a reasoner role would bind."""
    from data_tools.tiny_model import TinySize, build_tiny_reasoner

    return build_tiny_reasoner(tmp_path_factory.mktemp("models") / "reasoner", TinySize(hidden=64, intermediate=128, vocab=600))


def plugin_file(path: Path, at_import: str) -> str:
    """Write a reward plugin file that runs `at_import` when it is loaded and scores 1.0; its spec."""
    path.write_text(at_import + "\n\ndef score(response, ground_truth, *, extra_info):\n    return 1.0\n")
    return f"{path}:score"


def decisive(model):
    """`model` with weights drawn 15x wider than at init, so its greedy choices depend on its input.
    At init every prompt gets the same token over and over, and a test that compares greedy outputs
    would pass whatever the engine did to the prompt."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() >= 2:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    return model


def decisive_engine(folder: Path, batch_size: int = 8):
    """An hf engine on `folder` whose model's greedy choices depend on its input (`decisive`)."""
    from openvlt.engines.hf import HFEngine

    engine = HFEngine(str(folder), batch_size=batch_size)
    decisive(engine.model)
    return engine


@pytest.fixture
def logit_dtypes(monkeypatch):
    """The dtypes the local backend's models compute their logits in, one entry per forward pass:
    (dtype, which model loaded, in load order (GRPO: 0 the policy, 1 the reference), whether grad was on)."""
    import torch

    from openvlt.backends import local

    seen: list = []
    models: list = []
    loaded = local.load_model

    def load_and_watch(*args, **kwargs):
        model, number = loaded(*args, **kwargs), len(models)
        models.append(model)
        model.get_output_embeddings().register_forward_hook(
            lambda module, inputs, output: seen.append((output.dtype, number, torch.is_grad_enabled())))
        return model

    monkeypatch.setattr(local, "load_model", load_and_watch)
    return seen
