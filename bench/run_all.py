"""Run every bench/*.py (except this one) with --json and print one table of all figures."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHES = {"run_all.py", "export_digests.py"}  # export_digests: a check, not a figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("only", nargs="*", help="bench names to run (default: all)")
    args = ap.parse_args()
    benches = sorted(p for p in HERE.glob("*.py") if p.name not in NOT_BENCHES)
    if args.only:
        benches = [p for p in benches if p.stem in args.only]
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.jsonl"
        out.touch()
        for bench in benches:
            print(f"== {bench.name}", flush=True)
            code = subprocess.run([sys.executable, str(bench), "--json", str(out)]).returncode
            if code:
                failed.append(bench.name)
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]

    header = ("bench", "figure", "value", "reference", "ref value", "ratio")
    table = [
        (
            str(r.get("bench", "")),
            str(r["figure"]),
            f"{r['value']:,.2f} {r.get('unit', '')}".strip(),
            str(r.get("reference", "")),
            f"{r['ref_value']:,.2f} {r.get('unit', '')}".strip() if "ref_value" in r else "",
            f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *table, strict=True)]
    print()
    for line in (header, *table):
        print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
