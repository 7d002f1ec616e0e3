"""Whether the IAM policies shipped in ``configs/iam`` allow the S3 requests a test saw.

The S3 tests record every request through :mod:`s3_proxy`; this evaluates a policy's Allow
statements against one of them the way IAM does for these files: the action S3 authorizes the
operation with, the object's ARN against each statement's resources (``*`` wildcards), and for a
listing the bucket's ARN and the ``s3:prefix`` condition. The files' example bucket and prefix
(``amzn-s3-demo-bucket``, ``fleetscan/``) are replaced with the test's.
"""

from __future__ import annotations

import fnmatch
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from s3_proxy import Seen

IAM = Path(__file__).resolve().parent.parent / "configs" / "iam"
#: The IAM action that authorizes each S3 operation (S3's "Actions, resources and condition keys").
IAM_ACTION = {
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "ListObjectsV2": "s3:ListBucket",
    "DeleteObject": "s3:DeleteObject",
}


@cache
def policy(name: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((IAM / name).read_bytes())
    return document


def actions(name: str) -> set[str]:
    """Every action the policy allows."""
    found: set[str] = set()
    for statement in policy(name)["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        found.update([listed] if isinstance(listed, str) else listed)
    return found


def allows(
    name: str, action: str, *, bucket: str, prefix: str, key: str = "", listing: str | None = None
) -> bool:
    """Whether ``name`` allows ``action`` on object ``key`` (or, with ``listing``, a listing of
    that prefix), the test's objects being under ``prefix`` in ``bucket``."""
    for statement in policy(name)["Statement"]:
        listed = statement["Action"]
        if action not in ([listed] if isinstance(listed, str) else listed):
            continue
        resources = statement["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            resource = resource.replace("amzn-s3-demo-bucket/fleetscan/", f"{bucket}/{prefix}")
            resource = resource.replace("amzn-s3-demo-bucket", bucket)
            if listing is None and fnmatch.fnmatchcase(f"arn:aws:s3:::{bucket}/{key}", resource):
                return True
            if listing is not None and resource == f"arn:aws:s3:::{bucket}":
                allowed = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
                if allowed is None:
                    return True
                patterns = [p.replace("fleetscan/", prefix, 1) for p in allowed]
                if any(fnmatch.fnmatchcase(listing, p) for p in patterns):
                    return True
    return False


def allows_request(name: str, seen: Seen, *, bucket: str, prefix: str) -> bool:
    """Whether ``name`` allows the request ``seen`` (a listing by its ``prefix`` parameter)."""
    action = IAM_ACTION[seen.operation]
    if seen.operation in ("ListObjectsV2", "ListMultipartUploads"):
        listing = seen.query.get("prefix", "")
        return allows(name, action, bucket=bucket, prefix=prefix, listing=listing)
    return allows(name, action, bucket=bucket, prefix=prefix, key=seen.key)
