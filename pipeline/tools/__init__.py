"""Local subprocess tools: lm-evaluation-harness and vLLM's serving benchmark."""
