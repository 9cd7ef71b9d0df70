"""The one exception type whose message is shown to users as a single line, and the scripts' entry point that
shows it so."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


class DifflabError(Exception):
    """Bad input or a missing resource; the CLI prints the message alone and exits with code 2."""


def run_script(main: Callable[[], int | None]) -> None:
    """Runs a script's main (the benches'): exits with its return code, or, on a DifflabError, with its message in
    one line and code 2, as `difflab` does."""
    try:
        code = main()
    except DifflabError as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)
