"""The documentation works as written: its examples run, its links resolve, the site builds.

The examples of README.md and of the docs pages a user follows step by step are run the way that
user would run them: each ``sh`` and ``python`` block in order, each in a real subprocess (bash
with ``-e -o pipefail``, or the project's Python), in a fresh directory holding what a clone holds
for them (``configs/``), with ``.venv/bin`` on PATH as after ``. .venv/bin/activate``. An HTML
comment on the line before a block says more about it:

* ``<!-- docs-test: emulator -->``: the block starts the emulator. The test runs it as written,
  in the background, reads the ``export``/``unset`` lines it prints and applies them to every
  later block, as the user pastes them into a second terminal; it is stopped (Ctrl-C) at the
  end. Documents that start the same emulator share one.
* ``<!-- docs-test: exit 4; creates audit/report.html -->``: the exit code the text promises
  (default 0), and files the block must leave behind.
* ``<!-- docs-test: skip REASON -->``: a block that cannot run here (real AWS, root, the suite
  itself). A reason is required, and a document keeps few of them.

Blocks in other languages (``text``, ``toml``, ``sql``, ``ini``) show output or file content and
are not run. Nothing reaches AWS: the blocks get no credentials but the emulator's, the
developer's ``~/.aws`` is hidden, and a dead proxy on loopback catches any request that is not
for 127.0.0.1 (the emulator exports NO_PROXY for loopback).
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: Documents whose examples are run, in the order a user meets them.
RUNNABLE = ("README.md", "docs/getting-started.md", "docs/emulator.md")
RUN_LANGUAGES = {"sh": "shell", "bash": "shell", "shell": "shell", "python": "python"}
#: A hang guard per block, far above what any example takes.
BLOCK_TIMEOUT = 300
MAX_SKIPPED = 4
#: Nothing listens here: a request that would leave the machine fails at once instead.
DEAD_PROXY = "http://127.0.0.1:9"

FENCE = re.compile(r"^```(?P<language>[\w-]*)\s*$")
MARKER = re.compile(r"^<!-- docs-test: (?P<body>.*?) -->$")


@dataclass
class Block:
    document: str
    line: int
    language: str
    code: str
    skip: str | None = None
    emulator: bool = False
    exit_code: int = 0
    creates: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES and self.skip is None

    def __str__(self) -> str:
        return f"{self.document}:{self.line}"


def parse_marker(body: str, where: str) -> dict[str, object]:
    """``skip REASON`` | ``emulator`` | ``exit N`` and/or ``creates A, B``, split by ``;``."""
    if body.split(" ")[0] == "skip":  # the rest is the reason, whatever it holds
        reason = body[len("skip") :].strip()
        assert reason, f"{where}: a skipped block must say why"
        return {"skip": reason}
    found: dict[str, object] = {}
    for part in (p.strip() for p in body.split(";")):
        word, _, rest = part.partition(" ")
        if word == "emulator" and not rest:
            found["emulator"] = True
        elif word == "exit" and rest.strip().isdigit():
            found["exit_code"] = int(rest)
        elif word == "creates" and rest.strip():
            found["creates"] = [p.strip() for p in rest.split(",")]
        else:
            raise AssertionError(f"{where}: unknown docs-test marker {part!r}")
    return found


def blocks(document: str) -> list[Block]:
    """The fenced blocks of a document, each with the marker on the line before it."""
    lines = (ROOT / document).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"{document}:{i + 1}: unclosed code block"
        marker = MARKER.match(lines[i - 1]) if i else None
        block = Block(document, i + 1, opening["language"], "\n".join(lines[i + 1 : end]) + "\n")
        if marker is not None:
            for key, value in parse_marker(marker["body"], f"{document}:{i}").items():
                setattr(block, key, value)
        found.append(block)
        i = end + 1
    return found


def test_markers_are_on_blocks_that_run() -> None:
    """A marker on a block that would not run anyway (``text``, ``toml``) is a mistake."""
    for document in RUNNABLE:
        for block in blocks(document):
            marked = block.skip or block.emulator or block.exit_code or block.creates
            if marked:
                assert block.language in RUN_LANGUAGES, f"{block}: marker on a {block.language}"


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLEETSCAN_"))}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HTTP_PROXY": DEAD_PROXY,
        "HTTPS_PROXY": DEAD_PROXY,
        "http_proxy": DEAD_PROXY,
        "https_proxy": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "no_proxy": "127.0.0.1,localhost,::1",
        "NO_COLOR": "1",
    }
    return env


class Emulator:
    """A document's ``fleetscan emulator serve`` block, running as written."""

    def __init__(self, block: Block, cwd: Path, env: dict[str, str]) -> None:
        self.block = block
        self.process = subprocess.Popen(
            ["bash", "-c", block.code],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.exports: dict[str, str] = {}
        self.unsets: list[str] = []
        self._read_exports()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_exports(self) -> None:
        """The printed lines, up to the last one: what the user pastes into a second terminal."""
        while True:
            line = self.lines.get(timeout=BLOCK_TIMEOUT)
            assert line is not None, f"{self.block}: the emulator ended early: {self.stop()}"
            if line.startswith("export "):
                key, _, value = shlex.split(line)[1].partition("=")
                self.exports[key] = value
            elif line.startswith("unset "):
                self.unsets.extend(line.split()[1:])
            elif line.startswith("# role "):
                return

    def apply(self, env: dict[str, str]) -> None:
        """What pasting the lines does to a shell's environment."""
        env.update(self.exports)
        for key in self.unsets:
            env.pop(key, None)

    def stop(self) -> str:
        """Ctrl-C, as the text says; the whole group is killed if it does not stop."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=60)
        assert self.process.stderr is not None
        return self.process.stderr.read()


class Emulators:
    """One emulator per distinct command: documents that start the same one (the README and
    Getting started both say ``fleetscan emulator serve``) share it, as two terminals of one user
    would, which spares the suite a start, a stop and a cold first scan."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.running: dict[str, Emulator] = {}

    def start(self, block: Block, cwd: Path, env: dict[str, str]) -> Emulator:
        if block.code not in self.running:
            self.running[block.code] = Emulator(block, cwd, env)
        return self.running[block.code]

    def stop_all(self) -> None:
        for emulator in self.running.values():
            emulator.stop()


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    started = Emulators(tmp_path_factory.mktemp("emulators"))
    try:
        yield started
    finally:
        started.stop_all()


def _run(block: Block, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if RUN_LANGUAGES[block.language] == "shell":
        command = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    else:
        script = cwd / f".block-{block.line}.py"
        script.write_text(block.code, encoding="utf-8")
        command = [sys.executable, str(script)]
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A working directory with what a fresh clone holds for the examples."""
    directory = tmp_path / "fleetscan"
    directory.mkdir()
    shutil.copytree(ROOT / "configs", directory / "configs")
    return directory


@pytest.mark.parametrize("document", RUNNABLE)
def test_examples_run_as_written(
    document: str, clone: Path, tmp_path: Path, emulators: Emulators
) -> None:
    found = blocks(document)
    skipped = [b for b in found if b.language in RUN_LANGUAGES and b.skip is not None]
    assert len(skipped) <= MAX_SKIPPED, f"{document}: too many blocks skipped: {skipped}"
    assert sum(b.emulator for b in found) <= 1, f"{document}: more than one emulator"
    env = _base_env(tmp_path)
    ran = 0
    for block in found:
        if not block.runs:
            continue
        if block.emulator:
            emulators.start(block, emulators.home, _base_env(emulators.home)).apply(env)
            continue
        result = _run(block, clone, env)
        shown = f"{block} exited {result.returncode}\n{block.code}\n{result.stderr[-3000:]}"
        assert result.returncode == block.exit_code, shown
        assert "Traceback" not in result.stderr, shown
        for path in block.creates:
            assert (clone / path).exists(), f"{block}: {path} was not created\n{shown}"
        ran += 1
    assert ran, f"{document}: no example ran"


# -- the README as a page --------------------------------------------------------------------

LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_is_an_entrance() -> None:
    """Short enough to read in five minutes, with a table of contents that resolves."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    headings = {_anchor(h) for h in re.findall(r"^##+ (.+)$", text, re.MULTILINE)}
    links = [m["target"] for m in LINK.finditer(text)]
    for target in links:
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (ROOT / path).exists(), f"README links to {target}, which does not exist"
        elif anchor:
            assert anchor in headings, f"README links to #{anchor}, which is no heading"


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    """``make docs``: every page in the nav, every link and anchor resolving, every generated
    part (CLI help, config keys, schemas, API) rendered from the code."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "--burst N" in cli  # the generated help is on the page
