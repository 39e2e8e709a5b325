"""The cost of hashing every byte on every gate (not a test: it prints numbers).

Fetches the demo model (`modelgate demo init` first) into a throw-away model cache, then fetches it again
three times: each cache hit hashes every file again, as every gate does (there in the background, overlapped
with the vLLM boot). Prints the seconds and the hashing rate in GB/s.

    .venv/bin/python benchmarks/hash_bench.py [MODELGATE_HOME]     # default: .modelgate beside this repo
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from pipeline.config.release import Pin
from pipeline.model.fetch import fetch


def main() -> None:
    home = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / ".modelgate"
    manifest = json.loads((home / "hub" / "manifest.json").read_text())
    variant = manifest["variants"]["instruct"]
    pin = Pin("git", manifest["repo_path"], variant["revision"], variant["files"])
    cache = Path(tempfile.mkdtemp(prefix="modelgate-hash-bench-"))
    t0 = time.monotonic()
    fetch(pin, manifest["repo_path"], cache, file="hash_bench", progress=lambda _: None)
    print(f"first fetch (download + verify): {time.monotonic() - t0:.2f} s")
    for i in range(3):
        t0 = time.monotonic()
        hit = fetch(pin, manifest["repo_path"], cache, file="hash_bench", progress=lambda _: None)
        total = time.monotonic() - t0
        v = hit.verification
        assert v is not None and v.seconds is not None
        print(f"cache hit {i + 1}: {total:.2f} s in all; hashed {v.bytes / 1e9:.3f} GB in {v.seconds:.2f} s "
              f"= {v.gb_per_s:.2f} GB/s")


if __name__ == "__main__":
    main()
