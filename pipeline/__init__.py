"""modelgate: an evaluation-gated release pipeline for self-hosted open LLMs."""

__version__ = "0.1.0"
