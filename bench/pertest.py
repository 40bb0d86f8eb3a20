"""Benchmark: storing coverage snapshots of a kube-apiserver-sized build and computing per-test deltas.

A synthetic layout the size of a kube-apiserver coverage build (default 500,000 blocks in 5,000 files), one
process, `--snapshots` snapshots whose counters grow by a few thousand blocks each, one test per window cut by
markers. Prints: time to store one snapshot, bytes per snapshot in the store, time to compute every test's
delta (`per_test_coverage`), and what storing one row per block per snapshot would have cost instead.

Usage: .venv/bin/python bench/pertest.py [--blocks 500000] [--snapshots 50]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from auditcov.merge.cover.model import Block, Profile
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.snapshots import save_snapshot
from auditcov.merge.store import open_store

SECOND = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=500_000)
    parser.add_argument("--snapshots", type=int, default=50)
    parser.add_argument("--hits-per-test", type=int, default=3_000, help="blocks whose counters change per window")
    args = parser.parse_args()

    rng = random.Random(5)
    files = max(1, args.blocks // 100)
    blocks = [
        Block(f"k8s.io/kubernetes/pkg/file{i % files}.go", 10 + 3 * (i // files), 2, 12 + 3 * (i // files), 40)
        for i in range(args.blocks)
    ]
    statements = [rng.randint(1, 6) for _ in blocks]
    counts = [0] * len(blocks)

    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        db = open_store(db_path)
        save_seconds = []
        for snap in range(args.snapshots):
            if snap:
                for index in rng.sample(range(len(blocks)), args.hits_per_test):
                    counts[index] += rng.randint(1, 50)
            profile = Profile(
                "atomic", dict(zip(blocks, statements, strict=True)), dict(zip(blocks, counts, strict=True))
            )
            started = time.perf_counter()
            save_snapshot(
                db,
                run="bench",
                process="kube-apiserver",
                at_us=snap * SECOND,
                profile=profile,
                source=f"snap-{snap}",
                now_us=0,
            )
            save_seconds.append(time.perf_counter() - started)
            if snap:
                db.conn.execute(
                    "INSERT INTO markers VALUES ('bench', ?, 'start', ?)", (f"t{snap}", (snap - 1) * SECOND)
                )
                db.conn.execute("INSERT INTO markers VALUES ('bench', ?, 'end', ?)", (f"t{snap}", snap * SECOND))
        counters_bytes = db.conn.execute("SELECT SUM(LENGTH(counters)) FROM cover_snapshots").fetchone()[0]
        layout_bytes = db.conn.execute("SELECT SUM(LENGTH(blocks)) FROM cover_layouts").fetchone()[0]
        db.conn.execute("VACUUM")
        db.conn.close()
        store_bytes = db_path.stat().st_size

        db = open_store(db_path)
        started = time.perf_counter()
        results = per_test_coverage(db, "bench")
        delta_seconds = time.perf_counter() - started
        assert len(results) == args.snapshots - 1
        assert all(len(result.profile.counts) == args.hits_per_test for result in results)

    print(f"blocks per snapshot:        {args.blocks:,} in {files:,} files")
    print(f"snapshots:                  {args.snapshots}")
    save_seconds.sort()
    print(
        f"store one snapshot:         median {save_seconds[len(save_seconds) // 2] * 1000:.0f} ms, "
        f"max {save_seconds[-1] * 1000:.0f} ms"
    )
    print(f"counters per snapshot:      {counters_bytes / args.snapshots / 1024:.0f} KiB (stored)")
    print(f"layout, stored once:        {layout_bytes / 1024:.0f} KiB")
    print(f"store file after VACUUM:    {store_bytes / 2**20:.1f} MiB")
    print(
        f"per-test deltas:            {len(results)} tests in {delta_seconds:.2f} s "
        f"({delta_seconds / len(results) * 1000:.0f} ms per test, {args.hits_per_test:,} changed blocks each)"
    )
    print(f"one row per block per snapshot would be {args.blocks * args.snapshots:,} rows")


if __name__ == "__main__":
    main()
