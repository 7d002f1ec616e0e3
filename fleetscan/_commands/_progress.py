"""A scan with a person watching: live progress on a terminal, a summary table, or JSON lines.

stdout is left to the data (``--output -`` streams records there), so everything here writes to
stderr. Importing this module imports the engine: commands import it only once their input is
known good.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .._config import ScanConfig
from .._exceptions import ConfigError, FleetscanError
from .._run import ScanResult, plan_scan, run_scan
from .._scan import ScanStats
from .._sinks import manifest_location
from ._loop import run_async

_console = Console(stderr=True, highlight=False)


class Display:
    """A live table of the scan's counters, refreshed from ``update`` (a no-op when disabled)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._live: Live | None = None
        self._start = time.monotonic()
        self._last_calls = 0
        self._last_time = self._start
        self._rate = 0.0

    def __enter__(self) -> Display:
        if self.enabled:
            self._live = Live(console=_console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def update(self, stats: ScanStats) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        calls = stats.total_calls
        if now - self._last_time >= 1.0:
            self._rate = (calls - self._last_calls) / (now - self._last_time)
            self._last_calls, self._last_time = calls, now
        table = Table.grid(padding=(0, 2))
        table.add_row(
            f"[bold]units[/] {stats.units_done + stats.units_failed}/{stats.units_planned}",
            f"[bold]accounts[/] {stats.accounts}",
            f"[bold]gateways[/] {sum(stats.gateways.values())}",
            f"[bold]recovery points[/] {stats.recovery_points}",
        )
        table.add_row(
            f"[bold]errors[/] {stats.errors}",
            f"[bold]throttles[/] {stats.throttles}",
            f"[bold]calls/s[/] {self._rate:,.0f}",
            f"[bold]elapsed[/] {now - self._start:,.1f}s",
        )
        self._live.update(table)


def say(message: str, log_format: str, *, error: bool = False) -> None:
    if log_format == "json":
        level = "error" if error else "info"
        sys.stderr.write(orjson.dumps({"level": level, "message": message}).decode() + "\n")
    else:
        prefix = "fleetscan: error: " if error else "fleetscan: "
        _console.print(prefix + message, markup=False, highlight=False, soft_wrap=True)


def print_summary(manifest: dict[str, Any], stats: ScanStats, log_format: str) -> None:
    if log_format == "json":
        event = {
            "event": "scan_finished",
            "run_id": manifest.get("run_id"),
            "status": manifest.get("status"),
            **stats.as_dict(),
        }
        sys.stderr.write(orjson.dumps(event).decode() + "\n")
        return
    table = Table(title=f"fleetscan run {manifest.get('run_id')}: {manifest.get('status')}")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows: list[tuple[str, Any]] = [
        ("accounts", stats.accounts),
        ("units (account x region) done", stats.units_done),
        ("units failed", stats.units_failed),
        *((f"gateways {kind}", n) for kind, n in sorted(stats.gateways.items())),
        ("recovery points", stats.recovery_points),
        ("error records", stats.errors),
        ("API calls", stats.total_calls),
        ("retries", stats.retries),
        ("throttles", stats.throttles),
    ]
    for label, value in rows:
        table.add_row(label, f"{value:,}")
    organizations = manifest.get("organizations") or []
    if len(organizations) > 1 or any(o.get("status") == "failed" for o in organizations):
        # A run of several organizations: what each one came to, a failed one named.
        for organization in organizations:
            label = f"organization {organization.get('name') or organization.get('id')}"
            if organization.get("status") == "failed":
                table.add_row(label, "not listed")
            else:
                table.add_row(f"{label}: accounts", f"{organization.get('accounts', 0):,}")
    _console.print(table)
    files = manifest.get("files") or []
    if files:
        # soft_wrap: a path broken across lines cannot be copied.
        _console.print(
            f"{len(files)} file(s) written; manifest: {manifest_location(manifest)}",
            soft_wrap=True,
        )


def print_plan(plan: dict[str, Any], log_format: str) -> int:
    if log_format == "json":
        sys.stdout.write(orjson.dumps(plan).decode() + "\n")
        return 0
    accounts = plan["accounts"]
    _console.print(f"dry run: {len(accounts)} account(s), regions: {plan['regions']}")
    for account in accounts:
        organization = f"  {account['organization_id']}" if account.get("organization_id") else ""
        _console.print(
            f"  {account['id']}  {account['name'] or '-'}  {account['status']}{organization}"
        )
    for name, problem in plan.get("organizations_failed", {}).items():
        _console.print(f"organization {name!r} cannot be listed: {problem}", markup=False)
    _console.print(f"units (account x region): {plan['units']}")
    for operation, count in plan["minimum_calls"].items():
        _console.print(f"  {operation}: {count}")
    _console.print("no Storage Gateway call was made")
    return 0


def _shard_outcome(result: ScanResult) -> str:
    """What became of the run a shard belongs to."""
    text = f"shard {result.shard} of run {result.run_id}: {result.status}"
    if result.run_manifest is None:
        return text + "; the run's manifest is written by the last shard to finish"
    return (
        text + f"; run {result.run_id} is {result.run_manifest.get('status')}, manifest: "
        f"{manifest_location(result.run_manifest)}"
    )


def scan_with_progress(
    config: ScanConfig,
    *,
    quiet: bool = False,
    log_format: str = "text",
    metrics_file: Path | None = None,
) -> int:
    """``fleetscan scan``: run, show progress and a summary, return the exit code; with
    ``metrics_file``, the run's metrics too (whenever the run has a manifest)."""
    if config.dry_run:
        return print_plan(run_async(lambda: plan_scan(config)), log_format)
    display = Display(enabled=not quiet and log_format == "text" and sys.stderr.isatty())
    try:
        with display:
            result = run_async(
                lambda: run_scan(config, on_stats=display.update, handle_signals=True)
            )
    except KeyboardInterrupt:  # before the signal handlers were in place
        say("interrupted before the scan started", log_format)
        return 130
    except FleetscanError as exc:
        say(str(exc), log_format, error=True)
        return 2 if isinstance(exc, ConfigError) else 1
    if metrics_file is not None:
        from .._metrics import scan_metrics, write_metrics

        write_metrics(metrics_file, scan_metrics(result.manifest))
    if not quiet:
        print_summary(result.manifest, result.stats, log_format)
        if result.shard is not None:
            say(_shard_outcome(result), log_format)
    if result.status == "interrupted" and result.shard is not None:
        say(
            f"interrupted: finished units are saved; start shard {result.shard} again with the "
            "same arguments to continue it",
            log_format,
        )
    elif result.status == "interrupted":
        say(
            f"interrupted: finished units are saved; resume with: fleetscan scan <same flags> "
            f"--output {config.output} --resume {result.run_id}",
            log_format,
        )
    return result.exit_code
