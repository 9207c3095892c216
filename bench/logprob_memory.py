"""Memory of GRPO's log-probabilities at a real vocabulary: the local backend against full-sequence logits.

    .venv/bin/python bench/logprob_memory.py [--vocab 151936] [--rows 4] [--prompt 600] [--response 1024]
                                             [--hidden 256] [--device cuda]

The tiny student's vocabulary has 640 tokens, so its logits cost nothing; Qwen2.5-VL's has 151,936,
and a (rows, tokens, vocabulary) float32 tensor is most of a GRPO micro-batch's memory. This puts a
language-model head of that vocabulary on random hidden states (no transformer: the layers below the
head cost the same either way) and measures one forward and backward pass of the policy's response
log-probabilities two ways, each in its own process:
- `full`: logits at every position, then log-softmax and gather (what the backend did before);
- `backend`: `openvlt.backends.local._response_logprobs`: the head on the positions from the earliest
  response token on (`logits_to_keep`), then verl's `logprobs_from_logits`.
Prints the peak memory of each (CPU: the process's peak resident set above its baseline; GPU: the
peak PyTorch allocated) and their ratio.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from types import SimpleNamespace

import torch


class _Head(torch.nn.Module):
    """Random hidden states under a real-sized head; answers the way a transformers model does."""

    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.lm_head = torch.nn.Linear(hidden, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int = 0) -> SimpleNamespace:
        hidden = self.embed(input_ids)
        return SimpleNamespace(logits=self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden))


def _peak_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def _measure(args: argparse.Namespace) -> None:
    import verl.utils.torch_functional  # noqa: F401  (what _response_logprobs imports: loaded before the baseline)

    from openvlt.backends.local import _response_logprobs

    torch.manual_seed(0)
    model = _Head(args.vocab, args.hidden).to(args.device)
    width = args.prompt + args.response
    batch = {"input_ids": torch.randint(args.vocab, (args.rows, width), device=args.device),
             "attention_mask": torch.ones(args.rows, width, dtype=torch.long, device=args.device)}
    resp_pos = (args.prompt - 1 + torch.arange(args.response, device=args.device)).expand(args.rows, -1)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = _peak_mib(args.device)
    if args.way == "full":
        logits = model(**batch).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0].gather(1, resp_pos)
    else:
        logp = _response_logprobs(model, batch, resp_pos, 1.0)
    logp.sum().backward()
    print(json.dumps({"peak_mib": _peak_mib(args.device) - (0 if args.device.startswith("cuda") else baseline)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--rows", type=int, default=4, help="rollouts in the micro-batch")
    parser.add_argument("--prompt", type=int, default=600, help="prompt tokens, image tokens included")
    parser.add_argument("--response", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--way", choices=["full", "backend"], help=argparse.SUPPRESS)  # one measurement, in a child
    args = parser.parse_args()
    if args.way:
        return _measure(args)

    peaks = {}
    for way in ("full", "backend"):
        child = [sys.executable, __file__, *sys.argv[1:], "--way", way]
        peaks[way] = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])["peak_mib"]
    logits_mib = args.rows * (args.prompt + args.response) * args.vocab * 4 / 2**20
    print(f"{args.rows} rows x ({args.prompt} prompt + {args.response} response) tokens, vocabulary {args.vocab}, {args.device}; "
          f"one float32 logits tensor of the whole sequence: {logits_mib:.0f} MiB")
    print(f"full logits, log-softmax:            peak {peaks['full']:8.0f} MiB")
    print(f"backend (kept positions, verl's):    peak {peaks['backend']:8.0f} MiB")
    print(f"ratio full / backend: {peaks['full'] / peaks['backend']:.2f}x")


if __name__ == "__main__":
    main()
