"""Stage 1: fetch the candidate at its pinned commit and verify every file's sha256."""

from __future__ import annotations

from pipeline.core.result import StageResult, Status
from pipeline.gate.context import GateContext
from pipeline.model.fetch import fetch
from pipeline.util.progress import progress_for

NAME = "fetch"


def run(ctx: GateContext) -> StageResult:
    release = ctx.release
    pin = release.candidate
    model_dir = fetch(pin, release.repo_location(pin), ctx.home, file=str(release.path),
                      allowlist=release.remote_code_allowlist, progress=progress_for(NAME), background=True)
    ctx.model_dir = model_dir
    size = sum((model_dir.path / name).stat().st_size for name in model_dir.files)
    return StageResult(
        name=NAME, status=Status.PASSED,
        metrics={"files": len(model_dir.files), "bytes": size, "cache_hit": int(model_dir.cache_hit)},
        reasons=[f"{len(model_dir.files)} file(s) verified at {pin.revision}" if not model_dir.cache_hit else
                 f"{len(model_dir.files)} file(s) at {pin.revision} (cache hit; hashed again while vLLM boots)"],
        details={"path": str(model_dir.path), "revision": pin.revision, "files": model_dir.files},
    )
