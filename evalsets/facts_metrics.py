"""Per-item metrics of `support_facts` (lm-eval ``process_results: !function facts_metrics.process_results``).

With ``process_results`` lm-eval no longer computes the ``metric_list`` metrics itself: this function returns
every metric of the task for one item, and ``metric_list`` only names them with their aggregation.

- ``exact_match`` (0 or 1): lm-eval's own ``exact_match`` with the options the task used before
  (ignore case, ignore punctuation, leading/trailing whitespace dropped), so its values are unchanged.
- ``f1`` (0..1, continuous): SQuAD-style token F1 between the answer and the reference: both lowercased,
  punctuation and the articles a/an/the removed, split on whitespace; F1 of the token multisets. It gives
  partial credit where exact match gives none ("7 days" for "7": 0.667). Every output has a finite value:
  an empty answer scores 0 (1 when the reference is empty too), so a model's output can never make it NaN.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

EXACT_MATCH_OPTIONS: dict[str, Any] = {"ignore_case": True, "ignore_punctuation": True,
                                       "regexes_to_ignore": [r"^\s+", r"\s+$"]}
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def tokens(text: str) -> list[str]:
    """SQuAD's answer normalisation: lowercase, no punctuation, no articles, whitespace-split."""
    return _ARTICLES.sub(" ", str(text).lower().translate(_PUNCT)).split()


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the token multisets of `prediction` and `reference` (1.0 when both have no token)."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    from lm_eval.api.metrics import exact_match_hf_evaluate

    return float(exact_match_hf_evaluate(predictions=[prediction], references=[reference],
                                         **EXACT_MATCH_OPTIONS)["exact_match"])


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval's per-item hook: `results` holds the one generated answer (after the task's filter)."""
    prediction, reference = results[0], str(doc["answer"])
    return {"exact_match": exact_match(prediction, reference), "f1": token_f1(prediction, reference)}
