"""lm-eval model ``modelgate-completions``: local-completions whose loglikelihoods reuse vLLM's prefix cache.

lm-eval's ``local-completions`` scores a (context, continuation) pair with one ``echo`` request carrying prompt
logprobs over the whole sequence. vLLM V1 never reads the prefix cache for a request that asks for prompt
logprobs (``SamplingParams.skip_reading_prefix_cache`` defaults to ``prompt_logprobs is not None``), so every
choice of a multiple-choice item prefills the whole few-shot context again.

This class reads the same numbers from next-token logprobs instead. The logprob of continuation token ``i`` is
the next-token logprob after the prompt ``context + continuation[:i]`` (token ids, exactly lm-eval's
tokenization): one request per distinct prompt with ``max_tokens=1``, ``temperature=0``, no penalties and
``logprob_token_ids`` = every token wanted after that prompt (vLLM returns their logprobs from the full-vocab
log-softmax of the raw logits, plus the sampled, i.e. greedy, token's). All choices of an item share their
context, so one request scores every single-token choice of an item; a multi-token continuation adds one
request per further token. Greedy is lm-eval's test: the token's logprob equals the largest one, the greedy
token's. Each context is sent before the longer prompts that extend it, so those are read from the prefix cache,
and one item is scored alone before the others, so the prefix all items share (description, shots) is too.
A response whose numbers cannot be raw logprobs (a positive value: the
server returns logits, ``--logprobs-mode raw_logits``; a wanted token above the greedy one: sampling was not
greedy on the raw logits) is refused rather than scored.

Generation requests (``generate_until``) are local-completions' own, unchanged; continuations longer than
``max_continuation_tokens`` and loglikelihood_rolling windows go through local-completions' echo requests.

Public API: the registered class ``PrefixCachedCompletions`` and the pure helpers ``plan``, ``parse_choice``,
``combine`` (unit-tested without a server).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.openai_completions import LocalCompletionsAPI

MODEL_NAME = "modelgate-completions"
TOP_LOGPROBS = 20  # vLLM's default --max-logprobs
MAX_CONTINUATION_TOKENS = 32  # longer continuations (and loglikelihood_rolling windows) are scored by echo requests

Prompt = tuple[int, ...]


class NotRawLogprobs(RuntimeError):
    """The server's next-token numbers are not the model's raw logprobs: they cannot score loglikelihoods."""


@dataclass
class PromptPlan:
    """One prompt to score and the next tokens whose logprobs are wanted after it."""

    prompt: Prompt
    targets: list[int] = field(default_factory=list)


def plan(inputs: Sequence[Sequence[int]], ctxlens: Sequence[int]) -> list[list[PromptPlan]]:
    """Group the prompts needed by the requests ``inputs[j]`` (context + continuation, ``ctxlens[j]`` tokens
    of context): one group per distinct context, its first entry the context itself (sent first, so the rest
    read it from the prefix cache), then the longer prompts of multi-token continuations, shortest first.
    A (prompt, target) pair needed by several requests is planned once."""
    groups: dict[Prompt, dict[Prompt, list[int]]] = {}
    for inp, ctxlen in zip(inputs, ctxlens, strict=True):
        if ctxlen <= 0 or ctxlen >= len(inp):
            raise ValueError(f"a loglikelihood request needs a context and a continuation (ctxlen {ctxlen}, "
                             f"{len(inp)} tokens)")
        root = tuple(inp[:ctxlen])
        prompts = groups.setdefault(root, {root: []})
        for i in range(ctxlen, len(inp)):
            targets = prompts.setdefault(tuple(inp[:i]), [])
            if inp[i] not in targets:
                targets.append(inp[i])
    return [[PromptPlan(p, t) for p, t in sorted(prompts.items(), key=lambda kv: len(kv[0]))]
            for prompts in groups.values()]


def _token_id(key: str) -> int:
    """vLLM's ``return_tokens_as_token_ids`` form ``token_id:123`` -> 123."""
    prefix, _, number = key.rpartition(":")
    if prefix != "token_id":
        raise ValueError(f"expected a token as 'token_id:N', got {key!r}")
    return int(number)


def parse_choice(response: dict[str, Any], targets: Sequence[int]) -> tuple[dict[int, float], float]:
    """({target: logprob}, the greedy token's logprob) from a next-token request's response (one generated
    position, ``logprob_token_ids=targets``, ``return_tokens_as_token_ids``). Raises NotRawLogprobs when the
    numbers cannot be the model's raw logprobs, ValueError when the response lacks a target."""
    choice = response["choices"][0]
    lp = choice.get("logprobs") or {}
    tokens, top, first = lp.get("tokens") or [], lp.get("top_logprobs") or [], lp.get("token_logprobs") or []
    if not tokens or not top or not first or first[0] is None:
        raise ValueError(f"the server returned no logprobs for the next token: {str(choice)[:300]}")
    got = {_token_id(k): float(v) for k, v in (top[0] or {}).items()}
    greedy = float(first[0])
    missing = [t for t in targets if t not in got]
    if missing:
        raise ValueError(f"the server returned no logprob for token(s) {missing}: {str(choice)[:300]}")
    values = [greedy, *got.values()]
    if any(not math.isfinite(v) or v > 0.0 for v in values):
        raise NotRawLogprobs(f"the server's next-token numbers are not logprobs ({max(values)}): vLLM "
                             "--logprobs-mode must be raw_logprobs (the default) for loglikelihood: prefix_cached")
    if any(got[t] > greedy for t in targets):
        raise NotRawLogprobs(f"token {max(targets, key=lambda t: got[t])} is more likely than the greedy token "
                             f"{tokens[0]}: the server does not sample greedily on the raw logits")
    return {t: got[t] for t in targets}, greedy


def combine(inputs: Sequence[Sequence[int]], ctxlens: Sequence[int],
            scores: dict[tuple[Prompt, int], tuple[float, bool]]) -> list[tuple[float, bool]]:
    """(sum of the continuation's token logprobs, every token greedy) per request, from per-position scores."""
    out = []
    for inp, ctxlen in zip(inputs, ctxlens, strict=True):
        total, greedy = 0.0, True
        for i in range(ctxlen, len(inp)):
            logprob, is_greedy = scores[(tuple(inp[:i]), inp[i])]
            total += logprob
            greedy = greedy and is_greedy
        out.append((total, greedy))
    return out


@register_model(MODEL_NAME)
class PrefixCachedCompletions(LocalCompletionsAPI):
    """``local-completions`` with loglikelihoods read from next-token logprobs on the prefix cache.

    Extra model args: ``top_logprobs`` (default 20, at most the server's ``--max-logprobs``: tokens asked per
    request; a prompt with more wanted tokens is split over several requests), ``max_continuation_tokens``
    (default 32): a longer continuation, and every loglikelihood_rolling window (no cache key), is scored by
    local-completions' echo request, where one prefill beats a request per token.
    """

    def __init__(self, top_logprobs: int | str = TOP_LOGPROBS,
                 max_continuation_tokens: int | str = MAX_CONTINUATION_TOKENS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.top_logprobs = max(1, int(top_logprobs))
        self.max_continuation_tokens = int(max_continuation_tokens)
        self.requests_sent = 0

    def _payload(self, prompt: Prompt, targets: Sequence[int]) -> dict[str, Any]:
        # neutral penalties: the server's defaults (the model's generation_config.json) must not move the greedy token
        return {"model": self.model, "prompt": list(prompt), "max_tokens": 1, "temperature": 0, "logprobs": 1,
                "logprob_token_ids": list(targets), "return_tokens_as_token_ids": True, "repetition_penalty": 1.0,
                "frequency_penalty": 0.0, "presence_penalty": 0.0, "seed": self._seed}

    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        assert self.tokenizer is not None, "loglikelihood requests need a tokenizer for context lengths"
        cached = [j for j, (key, _, cont) in enumerate(requests)
                  if key is not None and 0 < len(cont) <= self.max_continuation_tokens]
        chosen = set(cached)
        echo = [j for j in range(len(requests)) if j not in chosen]
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        if echo:
            for j, answer in zip(echo, super()._loglikelihood_tokens([requests[j] for j in echo], **kwargs),
                                 strict=True):
                results[j] = answer
        if cached:
            inputs, ctxlens, cache_keys = self.batch_loglikelihood_requests([[requests[j] for j in cached]])
            scores = asyncio.run(self._score(plan(inputs, ctxlens), disable_tqdm))
            for j, answer, cache_key in zip(cached, combine(inputs, ctxlens, scores), cache_keys, strict=True):
                results[j] = answer
                self.cache_hook.add_partial("loglikelihood", cache_key, answer)
        return [r for r in results if r is not None]

    async def _score(self, groups: list[list[PromptPlan]],
                     disable_tqdm: bool) -> dict[tuple[Prompt, int], tuple[float, bool]]:
        from aiohttp import ClientSession, ClientTimeout, TCPConnector
        from tenacity import retry, stop_after_attempt, wait_exponential
        from tqdm import tqdm

        scores: dict[tuple[Prompt, int], tuple[float, bool]] = {}
        sem = asyncio.Semaphore(self._concurrent)
        pbar = tqdm(total=len(groups), desc="Requesting API (prefix-cached loglikelihoods)", disable=disable_tqdm)
        conn = TCPConnector(limit=self._concurrent, ssl=self.verify_certificate)
        async with ClientSession(connector=conn, timeout=ClientTimeout(total=self.timeout)) as session:

            @retry(stop=stop_after_attempt(self.max_retries), wait=wait_exponential(multiplier=0.5, min=1, max=10),
                   reraise=True)
            async def call(prompt: Prompt, targets: list[int]) -> tuple[dict[int, float], float]:
                async with sem:
                    async with session.post(self.base_url, json=self._payload(prompt, targets),
                                            headers=self.header) as response:
                        response.raise_for_status()
                        body = await response.json()
                self.requests_sent += 1
                return parse_choice(body, targets)

            async def score_prompt(item: PromptPlan) -> None:
                k = self.top_logprobs
                for got, greedy in await asyncio.gather(*(call(item.prompt, item.targets[i:i + k])
                                                          for i in range(0, len(item.targets), k))):
                    for t, logprob in got.items():
                        scores[(item.prompt, t)] = (logprob, logprob == greedy)

            async def score_group(group: list[PromptPlan]) -> None:
                await score_prompt(group[0])  # the context first: longer prompts read it from the prefix cache
                await asyncio.gather(*(score_prompt(p) for p in group[1:]))
                pbar.update(1)

            try:
                if groups:  # one item alone first: the prefix all items share (description, shots) is cached once
                    await score_group(groups[0])
                await asyncio.gather(*(score_group(g) for g in groups[1:]))
            finally:
                pbar.close()
        return scores
