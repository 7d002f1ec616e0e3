"""``python -m fleetscan.emulator serve ...``: the emulator's CLI without the main one."""

from ._cli import main

raise SystemExit(main())
