"""`serving:` in release.yaml: how the staging server is started (or reached) and probed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pipeline.config.fields import SECTION, Absent, EnvName, HttpUrl, Positive, Text, doc
from pipeline.config.request_profile import RequestProfile

ServingMode = Literal["spawn", "external"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]


@dataclass(frozen=True)
class Probe:
    """`serving.probe`: the smoke probe after start, one chat and one streamed completion (transport only:
    the answer is recorded, never judged)."""

    __pydantic_config__ = SECTION

    prompt: Annotated[str, doc("the user message sent", min_length=1)] = "Say hello in five words."
    max_tokens: Annotated[int, doc("tokens asked for", ge=1, le=4096)] = 16


@dataclass(frozen=True)
class Serving:
    """`serving`: the staging server the gate judges the candidate on."""

    __pydantic_config__ = SECTION

    mode: Annotated[ServingMode, doc("spawn: the gate starts vLLM on the fetched weights; external: the gate "
                                     "talks to a server already serving the candidate (external_url)")] = "spawn"
    external_url: Annotated[HttpUrl | Absent, doc("external mode: the server's base URL")] = None
    api_key_env: Annotated[EnvName | Absent, doc("external mode: the environment variable holding the endpoint's "
                                                 "API key (spawned servers get a random key per gate)")] = None
    host: Annotated[Text, doc("address the spawned server listens on")] = "127.0.0.1"
    port: Annotated[int | None, doc("fixed port for the staging server (default: a free port picked per gate)",
                                    ge=1, le=65535)] = None
    dtype: Annotated[Dtype, doc("vLLM --dtype")] = "bfloat16"
    max_model_len: Annotated[int, doc("vLLM --max-model-len: the context length served", ge=16)] = 2048
    tensor_parallel_size: Annotated[int, doc("vLLM --tensor-parallel-size", ge=1)] = 1
    enforce_eager: Annotated[bool, doc("vLLM --enforce-eager: no graph compilation (faster start, slower "
                                       "serving)")] = False
    extra_args: Annotated[tuple[str, ...], doc("more vLLM server arguments, as given")] = ()
    env: Annotated[dict[str, str], doc("environment of the spawned server")] = field(default_factory=dict)
    startup_timeout_s: Annotated[Positive, doc("seconds the server may take to answer after start")] = 600.0
    request_timeout_s: Annotated[Positive, doc("seconds one request may take")] = 120.0
    probe: Probe = Probe()
    request_profile: Annotated[RequestProfile, doc(
        "how production's clients call the model: parameters they always send (set) and parameters they leave "
        "to the server's defaults (server_default); every chat request the gate sends does the same")] = \
        RequestProfile()
