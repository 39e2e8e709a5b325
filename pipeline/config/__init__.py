"""Inputs: release.yaml and the prompt suites, loaded and validated against their JSON Schemas."""
