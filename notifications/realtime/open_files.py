"""The process's open-file limit: every socket a server holds, and every socket a load
generator opens, is an open file."""

import contextlib
import resource


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; return the soft limit.

    A shell's usual soft limit (1,024) stops a server at about a thousand sockets although its
    hard limit, what the operator allows (`LimitNOFILE` in deploy/reasonflow-notify@.service,
    `ulimit -Hn`), is often far higher; raising the soft limit up to it needs no privilege.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # macOS: an unlimited hard limit cannot be a soft one; the soft limit stays.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
