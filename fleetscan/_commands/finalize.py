"""``fleetscan finalize``: the manifest of a sharded run, from the shards that finished.

The last shard to finish writes its run's manifest by itself; this is for a run that lost a
shard for good (its share is then missing and the run ``partial``, naming it), or to check
what a run's manifest says. It writes the manifest only if there is none, so it can be run
any number of times.

It writes with the run's own S3 settings (encryption, checksum, bucket owner) and file mode, as
the run's plan keeps them, so the manifest is written as the last shard would have written it:
the flags need not be repeated, and one that disagrees with the plan is refused (exit 2) by the
library, naming it and both values.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._config import CHECKSUM_ALGORITHMS, SSE_MODES
from ._args import add_expected_bucket_owner, expected_bucket_owner
from ._loop import run_async

_EPILOG = """\
The run's manifest is written with the run's own --sse, --sse-kms-key-id, --bucket-key,
--checksum-algorithm and --expected-bucket-owner (in a directory, its --file-mode), as its plan
keeps them: no need to give them again. One given with another value than the run's is refused
(exit 2); the same value is fine, and --expected-bucket-owner for a run scanned without one adds
S3's check of the bucket's owner. A plan that keeps no such setting (older runs): the flag's.

exit codes: 0 the run is complete, 3 partial (a shard missing or unfinished: named), 1 fatal,
2 bad input (not a sharded run, a torn or changed plan or shard manifest, an S3 setting other
than the run's).
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
    s3 = finalize.add_argument_group(
        "the run's settings (default: the run's own, from its plan; another value is refused)"
    )
    s3.add_argument("--sse", choices=SSE_MODES, help="the run's server-side encryption")
    s3.add_argument("--sse-kms-key-id", metavar="KEY", help="the run's KMS key (with aws:kms)")
    s3.add_argument(
        "--bucket-key",
        action=argparse.BooleanOptionalAction,
        help="whether the run used an S3 Bucket Key",
    )
    s3.add_argument(
        "--checksum-algorithm", choices=CHECKSUM_ALGORITHMS, help="the run's checksum algorithm"
    )
    add_expected_bucket_owner(s3)


def run(args: argparse.Namespace) -> int:

    from .._run import EXIT_PARTIAL, finalize_run
    from .._sinks import manifest_location

    owner = expected_bucket_owner(args, args.output)
    manifest = run_async(
        lambda: finalize_run(
            args.output,
            args.run_id,
            profile=args.profile,
            expected_bucket_owner=owner,
            sse=args.sse,
            sse_kms_key_id=args.sse_kms_key_id,
            bucket_key=args.bucket_key,
            checksum_algorithm=args.checksum_algorithm,
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
