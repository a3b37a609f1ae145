"""The open-files limit: raised at start from the soft limit to the hard one.

Every connection is a file descriptor.  systemd's default soft limit is 1024
(the unit sets LimitNOFILE=65536), so ~1,000 idle or slow connections used to
lock every other client out: accept() failed with EMFILE.  The soft limit
may be raised up to the hard limit without privileges.
"""

import resource

from twisted.logger import Logger

log = Logger()


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, saying so in the log once;
    returns the (before, after) soft limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        # (an infinite hard limit cannot be the soft one on Linux: above nr_open)
        log.info("Open-files limit (RLIMIT_NOFILE): {soft} (the hard limit is {hard})",
                 soft=soft, hard="unlimited" if hard == resource.RLIM_INFINITY else hard)
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log.warn("Open-files limit (RLIMIT_NOFILE) stays {soft}: cannot raise it to the hard limit {hard}: {e}",
                 soft=soft, hard=hard, e=e)
        return soft, soft
    log.info("Raised the open-files limit (RLIMIT_NOFILE) from {soft} to the hard limit {hard}", soft=soft,
             hard=hard)
    return soft, hard
