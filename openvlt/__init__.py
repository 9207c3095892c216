"""openvlt: teach vision-language models to reason by iterating SFT and GRPO."""

__version__ = "0.1.0"
