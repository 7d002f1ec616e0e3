"""``fleetscan finalize``: the manifest of a sharded run, from the shards that finished.

The last shard to finish writes its run's manifest by itself; this is for a run that lost a
shard for good (its share is then missing and the run ``partial``, naming it), or to check
what a run's manifest says. It writes the manifest only if there is none, so it can be run
any number of times.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._args import add_expected_bucket_owner, expected_bucket_owner
from ._loop import run_async

_EPILOG = """\
exit codes: 0 the run is complete, 3 partial (a shard missing or unfinished: named), 1 fatal,
2 bad input (not a sharded run, a torn or changed plan or shard manifest).
"""


def add_parser(subparsers: Any) -> None:
    finalize: argparse.ArgumentParser = subparsers.add_parser(
        "finalize",
        help="write a sharded run's manifest from the shards that finished",
        description="Write the manifest of a run scanned in shards (--shard K/N) from the "
        "shards that finished, if it has none yet, and say what it holds. A shard missing or "
        "unfinished leaves its share out: the run is then partial and names it. Idempotent: a "
        "run's manifest, once written, is never replaced.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    finalize.add_argument(
        "--output",
        required=True,
        metavar="DEST",
        help="the shards' --output: a directory or s3://BUCKET/PREFIX/",
    )
    finalize.add_argument("--run-id", required=True, metavar="ID", help="the shards' --run-id")
    finalize.add_argument("--profile", metavar="NAME", help="AWS profile for an s3:// output")
    add_expected_bucket_owner(finalize)


def run(args: argparse.Namespace) -> int:

    from .._run import EXIT_PARTIAL, finalize_run
    from .._sinks import manifest_location

    owner = expected_bucket_owner(args, args.output)
    manifest = run_async(
        lambda: finalize_run(
            args.output, args.run_id, profile=args.profile, expected_bucket_owner=owner
        )
    )
    section = manifest.get("shards") or {}
    missing = section.get("missing") or []
    line = (
        f"fleetscan: run {manifest['run_id']} is {manifest['status']} "
        f"({section.get('count')} shard(s)"
        + (f"; missing or unfinished: {', '.join(missing)}" if missing else "")
        + f"); manifest: {manifest_location(manifest)}"
    )
    print(line, file=sys.stderr)
    return 0 if manifest["status"] == "complete" else EXIT_PARTIAL
