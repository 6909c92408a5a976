"""Command line: `python -m hyperrec.data.synthetic --scale tiny --seed 42 --out /tmp/data`."""
from __future__ import annotations

import argparse
import json
import time

from hyperrec.data.synthetic import SCALES, generate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="default", choices=sorted(SCALES))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True, help="output folder (span-*/, images/, ...)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    summary = generate(args.scale, args.seed, args.out)
    summary["seconds"] = round(time.perf_counter() - began, 2)
    print(json.dumps(summary, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
