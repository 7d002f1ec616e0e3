"""The audit's files: findings.ndjson, report.md, report.html and junit.xml.

The Markdown and HTML reports are rendered from the same tables (:func:`report_tables`), so they
cannot disagree on a number. Every file is written under a fresh temporary name and renamed into
place, so a CI job never picks up half a report, and a link planted in the report directory is
replaced, never written through (see :mod:`fleetscan._localfs`).
"""

from __future__ import annotations

import html
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from .._exceptions import ConfigError
from .._localfs import Tree
from ._diff import CHANGE_KINDS, RunDiff
from ._evaluate import BINS_PER_DECADE, STATUSES, AccountSummary, AuditResult, Finding
from ._policy import format_duration

FINDINGS_FILE = "findings.ndjson"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
JUNIT_FILE = "junit.xml"

#: Rows of the chart: the worst accounts first; the tables list every account anyway.
CHART_MAX_ACCOUNTS = 40


def prepare_report_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``--report-dir`` now, before any reading, so a bad path costs nothing."""
    directory = Path(path)
    try:
        Tree(directory, field="--report-dir").close()
    except OSError as exc:
        raise ConfigError("--report-dir", f"cannot create {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise ConfigError("--report-dir", f"{directory} is not writable")
    return directory


@contextmanager
def _atomic(directory: Path, name: str, *, field: str = "--report-dir") -> Iterator[IO[bytes]]:
    """Write ``name`` in ``directory`` under a fresh temporary name (created with ``O_EXCL``,
    never through a link planted there); rename it into place only when complete."""
    tree = Tree(directory, field=field, create=False)
    try:
        fd, temporary = tree.create_temporary(name, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            tree.replace(temporary, name)
        except BaseException:
            tree.unlink(temporary)
            raise
    finally:
        tree.close()


class FindingsWriter:
    """findings.ndjson, one finding a line, written as the audit makes them."""

    def __init__(self, directory: Path) -> None:
        self._context = _atomic(directory, FINDINGS_FILE)
        self._handle: IO[bytes] | None = None
        self.count = 0

    def __enter__(self) -> FindingsWriter:
        self._handle = self._context.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._context.__exit__(*exc_info)

    def write(self, finding: Finding) -> None:
        assert self._handle is not None
        self._handle.write(orjson.dumps(finding.as_json()) + b"\n")
        self.count += 1


# -- the shared tables ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    headers: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    #: Said instead of an empty table.
    empty: str = ""
    note: str = ""


def _n(value: int) -> str:
    return f"{value:,}"


def _age(seconds: float | None) -> str:
    return "no recovery point" if seconds is None else format_duration(seconds)


def verdict(result: AuditResult) -> str:
    c = result.counts
    return (
        f"{_n(c['stale'])} stale, {_n(c['unknown'])} unknown, {_n(c['compliant'])} compliant "
        f"({_n(result.volumes)} volumes judged)"
    )


def evidence_age(result: AuditResult) -> str:
    """How old the judged run is, against the limit: "3h 2m at the audit (limit 2d)"."""
    limit = result.max_scan_age_seconds
    text = f"{format_duration(result.scan_age_seconds)} at the audit"
    text += f" (limit {format_duration(limit)})" if limit is not None else " (no limit)"
    return text + (": too old, every finding unknown" if result.too_old else "")


def _objectives(summary: AccountSummary) -> str:
    return ", ".join(
        f"{format_duration(seconds)} ({rule})"
        for rule, seconds in sorted(summary.objectives.items())
    )


def _where(finding: Finding) -> str:
    return {
        "gateway": "gateway (its volumes)",
        "unit": "account and region" if finding.region else "account (all regions)",
        "run": "the run",
    }.get(finding.kind, finding.kind)


def report_tables(result: AuditResult) -> list[Table]:
    manifest = result.manifest
    c = result.counts
    kinds = result.unknown_by_kind
    evidence_rows = [
        ("run id", result.run_id),
        ("run status", result.run_status),
        ("scan window", f"{manifest.get('started_at')} to {manifest.get('ended_at')}"),
        ("evidence age", evidence_age(result)),
        *(
            (
                f"newer run {n.run_id}",
                f"not judged ({n.status}, started {n.started_at}): {n.reason}",
            )
            for n in result.newer_runs
        ),
        ("scanned by", f"fleetscan {manifest.get('fleetscan_version')}"),
        ("data", result.source),
        ("objectives", result.policy.source),
    ]
    if result.policy.sha256:
        evidence_rows.append(("policy sha256", result.policy.sha256))
    from .. import __version__

    evidence_rows += [
        ("audited by", f"fleetscan {__version__} at {result.audited_at}"),
        ("age measured at", "each record's scanned_at (re-auditing this run gives this answer)"),
    ]
    status_rows = [
        ("compliant", _n(c["compliant"]), "0", "0", _n(c["compliant"])),
        ("stale", _n(c["stale"]), "0", "0", _n(c["stale"])),
        (
            "unknown",
            _n(kinds["volume"]),
            _n(kinds["gateway"]),
            _n(kinds["unit"] + kinds["run"]),
            _n(c["unknown"]),
        ),
        (
            "total",
            _n(result.volumes + kinds["volume"]),
            _n(kinds["gateway"]),
            _n(kinds["unit"] + kinds["run"]),
            _n(result.findings),
        ),
    ]
    account_rows = [
        (
            s.account_id or "(organization)",
            s.account_name or "-",
            s.ou_path or "-",
            _n(s.counts["compliant"]),
            _n(s.counts["stale"]),
            _n(s.counts["unknown"]),
            _age(s.worst_age) if s.worst_age is not None else "-",
            _objectives(s) or "-",
        )
        for s in sorted(result.accounts.values(), key=lambda s: s.account_id or "")
    ]
    region_rows = [
        (
            region or "(account-wide)",
            _n(counts["compliant"]),
            _n(counts["stale"]),
            _n(counts["unknown"]),
        )
        for region, counts in sorted(result.regions.items(), key=lambda kv: kv[0] or "")
    ]
    rule_rows = [
        (
            rule.name,
            rule.selectors,
            format_duration(rule.objective_seconds),
            _n(rule.counts["compliant"]),
            _n(rule.counts["stale"]),
            _n(rule.counts["unknown"]),
        )
        for rule in result.rules.values()
    ]
    stale_rows = [
        (
            str(index),
            f.account_id or "-",
            f.region or "-",
            f.gateway_name or (f.gateway_arn or "-").rsplit("/", 1)[-1],
            f.volume_arn or "-",
            f.recovery_point_time or "-",
            _age(f.age_seconds),
            format_duration(f.objective_seconds),
            f.rule,
            "-" if math.isinf(f.overdue_seconds) else format_duration(f.overdue_seconds),
        )
        for index, f in enumerate(result.stale, 1)
    ]
    unknown_rows = [
        (
            f.account_id or "-",
            f.region or "-",
            f.gateway_arn or "-",
            _where(f),
            f.operation or "-",
            f.error_code or "-",
            f.rule,
        )
        for f in result.unknown
    ]
    file_rows = [
        (
            str(entry.get("dataset")),
            str(entry.get("path")),
            _n(int(entry.get("records", 0))),
            _n(int(entry.get("bytes", 0))),
            str(entry.get("sha256")),
        )
        for entry in manifest.get("files") or []
    ]
    tables = [
        Table("evidence", "Evidence", ("", ""), [tuple(r) for r in evidence_rows]),
        Table(
            "status",
            "Findings by status",
            ("status", "volumes", "gateways", "account/region units", "findings"),
            status_rows,
            note="An unknown gateway or unit stands for volumes that could not be read: never "
            "counted compliant.",
        ),
        Table(
            "accounts",
            "By account",
            (
                "account",
                "name",
                "OU",
                "compliant",
                "stale",
                "unknown",
                "oldest",
                "objective (rule)",
            ),
            account_rows,
            empty="No account in this run.",
        ),
        Table(
            "regions",
            "By region",
            ("region", "compliant", "stale", "unknown"),
            region_rows,
            empty="No finding.",
        ),
        Table(
            "rules",
            "Objectives applied",
            ("rule", "selects", "objective", "compliant", "stale", "unknown"),
            rule_rows,
            note="The most specific matching rule applies: gateway name, then account, then the "
            "deepest OU, then region; on a tie the smaller objective, then the rule written first.",
        ),
        Table(
            "stale",
            "Stale volumes, worst first",
            (
                "#",
                "account",
                "region",
                "gateway",
                "volume",
                "recovery point",
                "age",
                "objective",
                "rule",
                "over by",
            ),
            stale_rows,
            empty="No stale volume.",
        ),
        Table(
            "unknown",
            "Unknown: what could not be checked",
            ("account", "region", "gateway", "unknown", "operation", "error code", "rule"),
            unknown_rows,
            empty="Nothing unknown: every gateway and every account and region was read.",
        ),
        Table(
            "files",
            "Data files (from the run's manifest)",
            ("dataset", "path", "records", "bytes", "sha256"),
            file_rows,
            empty="The manifest lists no file.",
            note="Every file was read through the manifest; its size, sha256 and record count "
            "were checked against it.",
        ),
    ]
    tables[2:2] = change_tables(result.changes) if result.changes is not None else []
    return tables


#: Changes listed in the reports (all of them: ``fleetscan diff``).
CHANGE_ROWS = 200


def change_tables(diff: RunDiff) -> list[Table]:
    """What changed since the previous run: counts by kind, then the first changes."""
    order = {kind: index for index, kind in enumerate(CHANGE_KINDS)}
    changes = sorted(diff.changes, key=lambda c: order[c.change])[:CHANGE_ROWS]
    # The organization only when the changes span several, as in fleetscan diff's table.
    several = len({c.organization_id for c in diff.changes} - {None}) > 1
    rows = [
        (
            c.change,
            *((c.organization_id or "-",) if several else ()),
            c.account_id or "-",
            c.region or "-",
            c.gateway_name or (c.gateway_arn or "-").rsplit("/", 1)[-1],
            c.volume_arn or "-",
            c.recovery_point_time_before or "-",
            c.recovery_point_time_after or c.error_code or "-",
        )
        for c in changes
    ]
    place = ("organization", "account") if several else ("account",)
    headers = ("change", *place, "region", "gateway", "volume", "before", "after")
    more = diff.total - len(rows)
    command = f"fleetscan diff --input {diff.source} --from {diff.from_run_id}"
    command += f" --to {diff.to_run_id}"
    if diff.expected_bucket_owner is not None:
        command += f" --expected-bucket-owner {diff.expected_bucket_owner}"
    return [
        Table(
            "changes",
            f"Changes since run {diff.from_run_id}",
            ("change", "count"),
            [(kind, _n(diff.counts[kind])) for kind in CHANGE_KINDS],
            note=f"{_n(diff.volumes_before)} volumes then, {_n(diff.volumes_after)} now. stuck: "
            "the recovery point did not advance although the gateway answered both times.",
        ),
        Table(
            "changed",
            "What changed",
            headers,
            rows,
            empty="Nothing changed.",
            note=f"{_n(more)} more: {command}" if more > 0 else "",
        ),
    ]


# -- Markdown ------------------------------------------------------------------------------------

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|<>"} | {"\n": " ", "\r": " "})


def _md(text: str) -> str:
    return text.translate(_MD_SPECIAL)


def render_markdown(result: AuditResult) -> str:
    lines = [
        f"# Recovery-point audit of run {_md(result.run_id)}",
        "",
        f"**{_md(verdict(result))}**",
        "",
    ]
    lines += [f"> Warning: {_md(w)}" for w in result.warnings]
    if result.warnings:
        lines.append("")
    for table in report_tables(result):
        lines += [f"## {table.title}", ""]
        if table.key == "accounts":
            lines += [
                "The chart of recovery-point age per account against its objective is in "
                "report.html.",
                "",
            ]
        if not table.rows:
            lines += [_md(table.empty), ""]
            continue
        headers = table.headers if any(table.headers) else ("item", "value")
        lines.append("| " + " | ".join(_md(h) for h in headers) + " |")
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in table.rows]
        lines.append("")
        if table.note:
            lines += [_md(table.note), ""]
    return "\n".join(lines)


# -- HTML ----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a;
margin:2rem auto;max-width:1200px;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.25rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #d5dbe1;padding-bottom:.25rem}
.verdict{font-size:1.1rem;font-weight:600;padding:.6rem .9rem;border-radius:6px}
.fail{background:#fdecea;color:#8e1b14}.unknown{background:#fff4e0;color:#7a4a00}
.pass{background:#e8f5e9;color:#1b5e20}.warning{background:#fff4e0;padding:.4rem .8rem}
table{border-collapse:collapse;margin:.5rem 0;width:100%}
th,td{border:1px solid #d5dbe1;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;
word-break:break-all}tr.stale td:first-child{border-left:3px solid #c62828}
.note{color:#56606b;font-size:.9rem}svg{max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#1d232a}
"""
_NUMERIC = {"volumes", "gateways", "account/region units", "findings", "compliant", "stale"}
_NUMERIC |= {"unknown", "records", "bytes", "#"}
_MONO = {"volume", "path", "sha256", "gateway", "recovery point", "run id", "policy sha256"}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(result: AuditResult) -> str:
    c = result.counts
    css_class = "fail" if c["stale"] else "unknown" if c["unknown"] else "pass"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>fleetscan audit of run {_e(result.run_id)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>Recovery-point audit of run {_e(result.run_id)}</h1>",
        f'<p class="verdict {css_class}">{_e(verdict(result))}</p>',
    ]
    parts += [f'<p class="warning">Warning: {_e(w)}</p>' for w in result.warnings]
    for table in report_tables(result):
        parts.append(f'<section id="{table.key}">')
        parts.append(f"<h2>{_e(table.title)}</h2>")
        if table.key == "accounts":
            parts.append(render_chart(result))
        if not table.rows:
            parts.append(f"<p>{_e(table.empty)}</p>")
        else:
            parts.append(_html_table(table))
            if table.note:
                parts.append(f'<p class="note">{_e(table.note)}</p>')
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _html_table(table: Table) -> str:
    rows = []
    if any(table.headers):
        rows.append("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in table.headers) + "</tr>")
        rows.append("</thead>")
    rows.append("<tbody>")
    for row in table.rows:
        cells = []
        for header, cell in zip(table.headers, row, strict=True):
            key = header or row[0]
            cls = "num" if header in _NUMERIC else "mono" if key in _MONO else ""
            cells.append(f'<td class="{cls}">{_e(cell)}</td>' if cls else f"<td>{_e(cell)}</td>")
        row_class = ' class="stale"' if table.key == "stale" else ""
        rows.append(f"<tr{row_class}>" + "".join(cells) + "</tr>")
    rows.append("</tbody>")
    return f'<table class="{table.key}">' + "".join(rows) + "</table>"


_COLOURS = {"compliant": "#2e7d32", "stale": "#c62828", "unknown": "#ef8f00"}
_TICKS = (
    (1, "1s"),
    (60, "1m"),
    (600, "10m"),
    (3600, "1h"),
    (6 * 3600, "6h"),
    (86400, "1d"),
    (7 * 86400, "7d"),
    (30 * 86400, "30d"),
    (90 * 86400, "90d"),
    (365 * 86400, "1y"),
    (3 * 365 * 86400, "3y"),
)


def _chart_order(summary: AccountSummary) -> tuple[int, int, float, str]:
    return (
        -summary.counts["stale"],
        -summary.counts["unknown"],
        -(summary.worst_age or 0.0),
        summary.account_id or "",
    )


def render_chart(result: AuditResult) -> str:
    """Recovery-point age per account (log scale) against its objective(s), as inline SVG.

    Volumes are grouped into log-spaced age bins per account and status (a dot's area grows
    with its count), so the chart stays small however many volumes an account holds; a dark
    tick marks each objective that applies in the account; hovering shows the numbers.
    """
    accounts = sorted(result.accounts.values(), key=_chart_order)
    shown = [a for a in accounts if a.age_bins or a.counts["unknown"]][:CHART_MAX_ACCOUNTS]
    if not shown:
        return '<p class="note">No recovery point to chart.</p>'
    ages = [a.best_age for a in shown if a.best_age is not None]
    ages += [a.worst_age for a in shown if a.worst_age is not None]
    ages += [float(s) for a in shown for s in a.objectives.values()]
    low = max(1.0, min(min(ages, default=60.0), 60.0))
    high = max(max(ages, default=86400.0) * 1.5, low * 10)
    left, right, top, row_h = 250, 880, 40, 24
    width, height = 960, top + row_h * len(shown) + 40
    log_low, log_high = math.log10(low), math.log10(high)

    def x(age: float) -> float:
        frac = (math.log10(min(max(age, low), high)) - log_low) / (log_high - log_low)
        return round(left + frac * (right - left), 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="chart-title">',
        '<title id="chart-title">Recovery-point age per account against the objective</title>',
        f'<text x="{left}" y="16">Recovery-point age (log scale); dark ticks: objective.</text>',
    ]
    for i, (status, colour) in enumerate(_COLOURS.items()):
        lx = left + 360 + i * 95
        out.append(f'<circle cx="{lx}" cy="12" r="5" fill="{colour}"/>')
        out.append(f'<text x="{lx + 9}" y="16">{status}</text>')
    bottom = top + row_h * len(shown)
    for seconds, label in _TICKS:
        if low <= seconds <= high:
            tx = x(seconds)
            out.append(
                f'<line x1="{tx}" y1="{top}" x2="{tx}" y2="{bottom}" stroke="#e3e7eb"/>'
                f'<text x="{tx}" y="{bottom + 16}" text-anchor="middle">{label}</text>'
            )
    for row, summary in enumerate(shown):
        y0 = top + row * row_h
        cy = y0 + row_h / 2
        if row % 2:
            out.append(f'<rect x="0" y="{y0}" width="{width}" height="{row_h}" fill="#f7f8fa"/>')
        out.append(f'<text x="4" y="{cy + 4}">{_e(summary.label[:40])}</text>')
        if summary.best_age is not None and summary.worst_age is not None:
            out.append(
                f'<line x1="{x(summary.best_age)}" y1="{cy}" x2="{x(summary.worst_age)}" '
                f'y2="{cy}" stroke="#9aa4ae" stroke-width="1.5"/>'
            )
        for rule, seconds in sorted(summary.objectives.items()):
            ox = x(seconds)
            out.append(
                f'<line x1="{ox}" y1="{y0 + 3}" x2="{ox}" y2="{y0 + row_h - 3}" '
                f'stroke="#1d232a" stroke-width="2.5"><title>objective '
                f"{_e(format_duration(seconds))} (rule {_e(rule)})</title></line>"
            )
        for (status, index), count in sorted(summary.age_bins.items()):
            lo = 10 ** (index / BINS_PER_DECADE)
            hi = 10 ** ((index + 1) / BINS_PER_DECADE)
            radius = round(min(9.0, 2.5 + math.sqrt(count)), 1)
            out.append(
                f'<circle cx="{x(math.sqrt(lo * hi))}" cy="{cy}" r="{radius}" '
                f'fill="{_COLOURS[status]}" fill-opacity="0.7"><title>{count} {status} '
                f"volume(s) aged {_e(format_duration(lo))} to {_e(format_duration(hi))}"
                "</title></circle>"
            )
        if summary.counts["unknown"]:
            out.append(
                f'<text x="{right + 8}" y="{cy + 4}" fill="{_COLOURS["unknown"]}">'
                f"{summary.counts['unknown']} unknown</text>"
            )
    out.append("</svg>")
    more = len([a for a in accounts if a.age_bins or a.counts["unknown"]]) - len(shown)
    if more > 0:
        out.append(f'<p class="note">{more} more account(s) in the table below.</p>')
    return "\n".join(out)


# -- JUnit ---------------------------------------------------------------------------------------


def render_junit(result: AuditResult) -> bytes:
    """One test case per account, failing when any of its volumes is stale or unknown."""
    accounts = sorted(result.accounts.values(), key=lambda s: s.account_id or "")
    failures = sum(1 for s in accounts if s.failing)
    suite_name = f"fleetscan audit of run {result.run_id}"
    root = ET.Element(
        "testsuites",
        name="fleetscan audit",
        tests=str(len(accounts)),
        failures=str(failures),
        errors="0",
        time="0",
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=suite_name,
        tests=str(len(accounts)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time="0",
        timestamp=str(result.manifest.get("started_at", "")).rstrip("Z"),
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", result.run_id),
        ("run_status", result.run_status),
        ("objectives", result.policy.source),
        ("source", result.source),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    by_account: dict[str | None, list[Finding]] = {}
    for finding in [*result.stale, *result.unknown]:
        by_account.setdefault(finding.account_id, []).append(finding)
    for summary in accounts:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"fleetscan.audit.{result.run_id}",
            name=summary.label,
            time="0",
        )
        counts = summary.counts
        if not summary.failing:
            continue
        message = (
            f"{counts['stale']} stale, {counts['unknown']} unknown, {counts['compliant']} compliant"
        )
        failure = ET.SubElement(
            case,
            "failure",
            message=message,
            type="stale" if counts["stale"] else "unknown",
        )
        failure.text = "\n".join(_junit_line(f) for f in by_account.get(summary.account_id, []))
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


def _junit_line(finding: Finding) -> str:
    if finding.status == "stale":
        return (
            f"stale: {finding.volume_arn} recovery point {finding.recovery_point_time}, "
            f"age {_age(finding.age_seconds)} > {format_duration(finding.objective_seconds)} "
            f"(rule {finding.rule})"
        )
    what = finding.gateway_arn or (
        f"{finding.account_id} {finding.region}" if finding.region else f"{finding.account_id}"
    )
    return f"unknown: {what}: {finding.operation or '-'} {finding.error_code or '-'}"


def write_reports(result: AuditResult, directory: Path) -> list[Path]:
    """report.md, report.html and junit.xml (findings.ndjson is written during the audit)."""
    written = []
    for name, data in (
        (MARKDOWN_FILE, render_markdown(result).encode()),
        (HTML_FILE, render_html(result).encode()),
        (JUNIT_FILE, render_junit(result)),
    ):
        with _atomic(directory, name) as handle:
            handle.write(data)
        written.append(directory / name)
    return written


__all__ = [
    "FINDINGS_FILE",
    "HTML_FILE",
    "JUNIT_FILE",
    "MARKDOWN_FILE",
    "STATUSES",
    "FindingsWriter",
    "prepare_report_dir",
    "render_html",
    "render_junit",
    "render_markdown",
    "write_reports",
]
