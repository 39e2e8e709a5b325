"""The staging vLLM server process, the smoke probe, the chat client, Prometheus metrics."""
