"""What the emulator saw: the evidence tests and benchmarks check a scanner against.

A scanner's claims ("one ListGateways page per empty pair", "never more than N calls in
flight", "a throttle slows the whole bucket") are only checkable from the server's side, so the
emulator counts every call by operation (of every service it serves), account and region, every
fault it injected, every error it answered, and how many calls were in flight at once.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from ._faults import OPERATION_SERVICE

#: The fault kinds counted, in the order the server considers them.
FAULT_KINDS: tuple[str, ...] = (
    "access_denied",
    "throttle",
    "latency",
    "reset",
    "slow",
    "internal_error",
    "malformed",
    "expired_token",
    "empty_page",
)


class Counters:
    """Thread-safe counters, written by the server's event loop and read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, str, str]] = Counter()
        self._faults: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._rejected = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._connections = 0

    # -- written by the server ----------------------------------------------------------------

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            if self._in_flight > self._peak_in_flight:
                self._peak_in_flight = self._in_flight

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def connection(self) -> None:
        """A client opened a connection and sent an API call on it."""
        with self._lock:
            self._connections += 1

    def call(self, operation: str, account_id: str, region: str) -> None:
        with self._lock:
            self._calls[(operation, account_id, region)] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def error(self, code: str) -> None:
        """An error answered, keyed ``__type`` or ``__type/errorCode`` (prefix stripped)."""
        with self._lock:
            self._errors[code] += 1

    def reject(self, code: str) -> None:
        """A request refused before it became a call (unsigned, unknown key, bad scope)."""
        with self._lock:
            self._rejected += 1
            self._errors[code] += 1

    # -- read by anyone -----------------------------------------------------------------------

    def calls(
        self,
        operation: str | None = None,
        account_id: str | None = None,
        region: str | None = None,
        *,
        service: str | None = None,
    ) -> int:
        """Calls received that match every given filter (all calls, of every service, when none
        is given); ``service`` is a credential-scope name such as ``storagegateway``."""
        with self._lock:
            items = list(self._calls.items())
        return sum(
            count
            for (op, account, reg), count in items
            if (operation is None or op == operation)
            and (account_id is None or account == account_id)
            and (region is None or reg == region)
            and (service is None or OPERATION_SERVICE.get(op) == service)
        )

    def first_called(self, operation: str) -> list[str]:
        """The accounts that made ``operation`` calls, in the order of their first one.

        Read from the order the counters' keys were first set (dicts keep it), so the hot path
        pays nothing for it: a scanner's claim about which accounts it starts first is
        checkable from here.
        """
        with self._lock:
            keys = list(self._calls)
        return list(dict.fromkeys(account for op, account, _ in keys if op == operation))

    @property
    def throttles(self) -> int:
        with self._lock:
            return self._faults["throttle"]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def peak_in_flight(self) -> int:
        with self._lock:
            return self._peak_in_flight

    def faults(self) -> dict[str, int]:
        """Faults injected, by kind (every kind present, zero included)."""
        with self._lock:
            return {kind: self._faults[kind] for kind in FAULT_KINDS}

    def errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-able data: what ``GET /_emulator/counters`` returns."""
        with self._lock:
            calls = list(self._calls.items())
            faults = {kind: self._faults[kind] for kind in FAULT_KINDS}
            errors = dict(sorted(self._errors.items()))
            rejected = self._rejected
            in_flight = self._in_flight
            peak = self._peak_in_flight
            connections = self._connections
        by_operation: Counter[str] = Counter()
        by_service: Counter[str] = Counter()
        nested: dict[str, dict[str, dict[str, int]]] = {}
        for (operation, account_id, region), count in sorted(calls):
            by_operation[operation] += count
            by_service[OPERATION_SERVICE.get(operation, "unknown")] += count
            nested.setdefault(operation, {}).setdefault(account_id, {})[region] = count
        return {
            "calls_total": sum(by_operation.values()),
            "calls_by_operation": dict(sorted(by_operation.items())),
            #: storagegateway, sts, organizations, ec2 -> calls
            "calls_by_service": dict(sorted(by_service.items())),
            #: operation -> account -> region -> count
            "calls": nested,
            "faults": faults,
            "throttles": faults["throttle"],
            "errors": errors,
            "rejected": rejected,
            "in_flight": in_flight,
            "peak_in_flight": peak,
            #: Connections clients opened to send API calls (a pool's size shows here).
            "connections": connections,
        }

    def reset(self) -> None:
        """Zero everything; calls in flight stay counted (they are still running), and the peak
        restarts from them."""
        with self._lock:
            self._calls.clear()
            self._faults.clear()
            self._errors.clear()
            self._rejected = 0
            self._peak_in_flight = self._in_flight
            self._connections = 0
