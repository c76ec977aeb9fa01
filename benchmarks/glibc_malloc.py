"""glibc's allocator settings in a benchmark's environment: the setting that keeps freed memory, and which others are set.

glibc hands large freed blocks back to the kernel, and the next call faults them in afresh
(benchmarks/ALLOCATOR.md); two variables keep them in the process. Any of four variables, or a ``glibc.malloc``
tunable, moves glibc off its default (dynamic) thresholds (``man mallopt``): a benchmark that says it ran under
glibc's default must have none of them.
"""

import os
from typing import Dict, Mapping, Optional

#: glibc's thresholds that keep freed memory in the process (``--keep-freed-memory``, benchmarks/ALLOCATOR.md): the
#: next call reuses pages it has instead of faulting fresh ones in, which removes most of the run-to-run noise.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
#: Setting any of these (``man mallopt``) also turns off glibc's dynamic mmap threshold: no longer its default.
_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad",
                    "glibc.malloc.mmap_max")


def malloc_settings(environ: Mapping[str, str]) -> Dict[str, str]:
    """The variables of ``environ`` that move glibc's allocator off its default thresholds (as set)."""
    settings = {k: environ[k] for k in _MALLOC_VARIABLES if k in environ}
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(entry.split("=")[0] in _MALLOC_TUNABLES for entry in tunables.split(":")):
        settings["GLIBC_TUNABLES"] = tunables
    return settings


def allocator_environment(keep_freed_memory: bool, environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``environ`` (the process's own by default) for a child with glibc's default thresholds, or with exactly
    :data:`KEEP_FREED_MEMORY`: the parent's own allocator settings never reach it."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in _MALLOC_VARIABLES}
    tunables = [e for e in env.pop("GLIBC_TUNABLES", "").split(":") if e and e.split("=")[0] not in _MALLOC_TUNABLES]
    if tunables:
        env["GLIBC_TUNABLES"] = ":".join(tunables)
    if keep_freed_memory:
        env.update(KEEP_FREED_MEMORY)
    return env


def freed_memory_kept(environ: Optional[Mapping[str, str]] = None) -> str:
    """For a report's header: does glibc keep freed memory in a process started with ``environ``?"""
    settings = malloc_settings(os.environ if environ is None else environ)
    if settings == KEEP_FREED_MEMORY:
        return "yes"
    if not settings:
        return "no (glibc's default)"
    return "no, and not glibc's default either: " + " ".join(f"{k}={v}" for k, v in sorted(settings.items()))
