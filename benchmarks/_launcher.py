"""Run a command; write its exit status, wall time, CPU time and peak RSS as JSON to ``argv[1]``.

Why a launcher instead of ``os.wait4`` in the benchmark itself: Linux reports a child's peak RSS
(``ru_maxrss``) as at least the RSS of the process that forked it, because the forked copy of
the parent's memory counts until ``exec`` replaces it. A benchmark process that has built a
million-record ground truth would make every scanner it starts look a gigabyte large (measured:
an 800 MB parent, a ``python -c pass`` child reported as 814 MB). This launcher is a fresh, small
interpreter (``-I -S``: standard library only), so the child it forks starts small and the peak
reported is the child's own.

Usage: ``python -I -S _launcher.py REPORT.json COMMAND [ARG...]``; stdin, stdout and stderr are
the command's.
"""

import json
import os
import subprocess
import sys
import time


def main() -> int:
    report, argv = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    process = subprocess.Popen(argv)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    with open(report, "w") as out:
        json.dump(
            {
                "returncode": os.waitstatus_to_exitcode(status),
                "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
            },
            out,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
