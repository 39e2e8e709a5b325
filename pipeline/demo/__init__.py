"""Demo model hub: SmolLM2-135M-Instruct (GGUF from PyPI) converted and published at deterministic git commits."""
