"""The descriptor limit (RLIMIT_NOFILE): raised for an engine's process, given back to the
processes it starts.

Every HTTP connection to the conductor is a descriptor, and each stdio bridge may hold up to
136 of them (server/bridge.py POOL_SIZE), beside the pipes of running sheets and the
store's files: a few busy sessions pass the soft limit most systems start a process with
(1024). So the conductor raises its soft limit toward the hard limit at start, up to
`CEILING` (a hard limit can be a million or unlimited, and nothing here needs that many),
never lowering it.

A soft limit above 1024 is what breaks programs that use select() (FD_SETSIZE is 1024: a
descriptor past it overruns their fd_set instead of failing with EMFILE), and what makes
programs that close every possible descriptor at start slow; that is why systems keep the
default soft limit at 1024 and let programs that need more raise their own. So sheets (and
every other process the engine starts) get back the soft limit the conductor was started
with, as they start: `prlimit(2)` on the child right after the spawn, then on each process
it has started by then (its children, theirs: read from /proc).

What that costs, measured with timeit: about 15 us a spawn, where `Child.spawn` of
/bin/true and its wait take about 0.8 ms (within the noise of timing the spawn itself). The
exact ways cost far more: setting the limit between fork and exec needs a `preexec_fn`,
which makes `subprocess` fork the whole conductor (no vfork) and run Python in the child,
8 to 18 ms a spawn; starting every child through a shell that sets it first adds an exec,
+0.5 ms. What the cheap way leaves: from its exec until the call lands (the spawning thread
may wait a few milliseconds for the GIL) a child has the conductor's limit, and so had a
process it started and that ended within that time. Nothing opens a thousand files that
soon; a program that reads its limit at once may see the raised one.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# At most this soft limit: room for hundreds of bridges' connections, and bounded where
# the hard limit is not.
CEILING = 65536
# A child's descendants looked at, at most (a fork bomb is not walked to its end).
MAX_EARLY_PROCESSES = 64


@dataclass(frozen=True)
class DescriptorLimit:
    """What `raise_descriptor_limit` found and did."""

    found: int  # the soft limit the process was started with
    soft: int  # the soft limit now
    hard: int
    # Why it could not be raised, when it could not.
    error: str | None = None

    @property
    def raised(self) -> bool:
        return self.soft != self.found


# (soft, hard) for the processes this one starts, once the soft limit was raised.
_for_children: tuple[int, int] | None = None


def _shown(value: int) -> int | str:
    return "unlimited" if value == resource.RLIM_INFINITY else value


def raise_descriptor_limit(ceiling: int = CEILING) -> DescriptorLimit:
    """Raise this process's soft limit to the hard limit, or to `ceiling` below it; never
    lower it. Children started later through `restore_for_child` get the one found."""
    global _for_children
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return DescriptorLimit(found=soft, soft=soft, hard=hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # e.g. a hard limit above what the kernel allows
        return DescriptorLimit(found=soft, soft=soft, hard=hard, error=str(exc))
    _for_children = (soft, hard)
    return DescriptorLimit(found=soft, soft=target, hard=hard)


def restore_for_child(pid: int) -> None:
    """Give a process just started, and those it has started since, the soft limit this one
    was started with (nothing when it was never raised). Each is set before its children are
    read, so one it forks after that inherits the limit set."""
    if _for_children is None:
        return
    todo, seen = [pid], 0
    while todo and seen < MAX_EARLY_PROCESSES:
        current = todo.pop()
        seen += 1
        try:
            resource.prlimit(current, resource.RLIMIT_NOFILE, _for_children)
            # The main thread's children: all a process has in its first moments.
            with open(f"/proc/{current}/task/{current}/children", "rb") as listed:
                todo.extend(int(child) for child in listed.read().split())
        except OSError:
            continue  # gone already, not ours to change, or no children list (a kernel option)


def describe(limit: DescriptorLimit) -> dict[str, int | str | None]:
    """The fields a log line gives."""
    return {
        "soft": _shown(limit.soft),
        "found": _shown(limit.found),
        "hard": _shown(limit.hard),
        "children_get": _shown(limit.found),
        "error": limit.error,
    }
