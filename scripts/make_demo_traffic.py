"""Write the demo's recorded production traffic (pipeline/demo/traffic.py; fixed seed): traffic/demo.jsonl.

    .venv/bin/python scripts/make_demo_traffic.py [--out traffic/demo.jsonl] [--count 300] [--seed N]
                                                  [--served-name chat@<12 hex>]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.demo import traffic  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "traffic" / "demo.jsonl")
    parser.add_argument("--count", type=int, default=traffic.COUNT)
    parser.add_argument("--seed", type=int, default=traffic.SEED)
    parser.add_argument("--served-name", default=traffic.PREVIOUS_PRODUCTION,
                        help="the served name production's recorded answers are stamped with")
    args = parser.parse_args()
    path = traffic.write(args.out, traffic.generate(args.count, args.seed, args.served_name))
    print(f"wrote {args.count} recorded requests to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
