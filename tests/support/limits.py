"""Commands started with a lower open-file limit."""

import sys

# Sets the limits, then becomes the command (the same process): no preexec_fn, which is unsafe
# in a process with threads.
_SET_OPEN_FILES = (
    "import os, resource, sys; "
    "soft, hard = sys.argv[1:3]; "
    "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard == '-' else int(hard); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(soft), hard)); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def with_open_files(command: list[str], soft: int, hard: int | None = None) -> list[str]:
    """`command` (its first item the executable's path), run with these open-file limits (the
    hard one unchanged when None)."""
    limits = [str(soft), "-" if hard is None else str(hard)]
    return [sys.executable, "-c", _SET_OPEN_FILES, *limits, *command]
