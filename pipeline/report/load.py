"""The load stage's results as the renderings read them, typed: its concurrency levels, request-rate levels and
knee steps (`LoadLevel`), the knee search (`Knee`) and the whole (`LoadResults`, from the stage's details).

The stage writes plain rows (gate/stages/load.py; judged by checks/slo.py and checks/goodput.py, which read the
rows as recorded); these classes read them back, every field optional where an older report lacks it: reports from
before the request-rate levels have none, and no knee."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50, 95, 99)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class LoadLevel:
    """One measured level: `level` ("1x", "r1", a knee step's), at `concurrency` requests at a time or at
    `request_rate` Poisson arrivals a second; TTFT and e2e latency percentiles (p50, p95, p99, ms); throughputs;
    goodput (requests/s within every SLO, None: not measured) and its share; failed of `num_prompts`; the
    server's most waiting requests and KV-cache use (None: not scraped); a knee step's `within_slo`. `row` is the
    level as recorded (what the judges read)."""

    level: str
    concurrency: int | None
    request_rate: float | None
    ttft_ms: tuple[float | None, ...]
    e2el_ms: tuple[float | None, ...]
    output_throughput: float
    request_throughput: float
    goodput: float | None
    good_fraction: float
    failed: int
    num_prompts: int
    max_waiting: float | None
    max_kv_cache_usage: float | None
    within_slo: bool | None
    row: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoadLevel:
        server = d.get("server") or {}
        concurrency = d.get("concurrency")
        within = d.get("within_slo")
        return cls(level=str(d.get("level")), concurrency=None if concurrency is None else int(concurrency),
                   request_rate=_float(d.get("request_rate")),
                   ttft_ms=tuple(_float(d.get(f"p{p}_ttft_ms")) for p in PERCENTILES),
                   e2el_ms=tuple(_float(d.get(f"p{p}_e2el_ms")) for p in PERCENTILES),
                   output_throughput=float(d.get("output_throughput") or 0),
                   request_throughput=float(d.get("request_throughput") or 0),
                   goodput=_float(d.get("goodput")), good_fraction=float(d.get("good_fraction") or 0),
                   failed=int(d.get("failed") or 0), num_prompts=int(d.get("num_prompts") or 0),
                   max_waiting=_float(server.get("max_waiting")),
                   max_kv_cache_usage=_float(server.get("max_kv_cache_usage")),
                   within_slo=None if within is None else bool(within), row=d)


@dataclass(frozen=True)
class Knee:
    """The load stage's knee search: the highest request rate within every SLO (`rate`, None: none was) and the
    first failing one (`first_failing`, None: none failed), why the search stopped, its steps (levels with
    `within_slo`) and `min_rate` (the gate's floor, None: reported only)."""

    rate: float | None
    first_failing: float | None
    stopped: str
    steps: tuple[LoadLevel, ...]
    elapsed_s: float
    min_rate: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Knee:
        return cls(rate=_float(d.get("rate")), first_failing=_float(d.get("first_failing")),
                   stopped=str(d.get("stopped") or ""),
                   steps=tuple(LoadLevel.from_dict(s) for s in d.get("steps") or ()),
                   elapsed_s=float(d.get("elapsed_s") or 0.0), min_rate=_float(d.get("min_rate")))

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "first_failing": self.first_failing, "stopped": self.stopped,
                "steps": [dict(s.row) for s in self.steps], "elapsed_s": self.elapsed_s, "min_rate": self.min_rate}


@dataclass(frozen=True)
class LoadResults:
    """Concurrency levels, request-rate levels, the knee, the goodput limits (ms, vLLM's names), the
    goodput-limited cost, the degradation curve's shape and the arrivals' burstiness."""

    levels: tuple[LoadLevel, ...] = ()
    rate_levels: tuple[LoadLevel, ...] = ()
    knee: Knee | None = None
    goodput_limits_ms: dict[str, float] = field(default_factory=dict)
    cost_per_1m_output_tokens: float | None = None
    price_per_hour: float | None = None
    curve_shape: str | None = None
    burstiness: float = 1.0

    @classmethod
    def from_details(cls, d: Mapping[str, Any]) -> LoadResults:
        knee = d.get("knee")
        curve = d.get("curve")
        return cls(levels=tuple(LoadLevel.from_dict(r) for r in d.get("levels") or ()),
                   rate_levels=tuple(LoadLevel.from_dict(r) for r in d.get("rate_levels") or ()),
                   knee=Knee.from_dict(knee) if isinstance(knee, Mapping) else None,
                   goodput_limits_ms=dict(d.get("goodput_limits_ms") or {}),
                   cost_per_1m_output_tokens=_float(d.get("cost_per_1m_output_tokens")),
                   price_per_hour=_float(d.get("price_per_hour")),
                   curve_shape=str(curve["shape"]) if isinstance(curve, Mapping) and "shape" in curve else None,
                   burstiness=float(d.get("burstiness") or 1))

    @property
    def measured(self) -> bool:
        return bool(self.levels or self.rate_levels or (self.knee and self.knee.steps))
