"""Run a module under cProfile counting CPU time, not wall time (a send that wakes a server
on the other core, or a pause while another process has the CPU, would otherwise count as
this process's work), and write the statistics when it ends:

    python -m bench._profiled FILE MODULE [ARGS...]
"""

from __future__ import annotations

import contextlib
import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module, *rest = sys.argv[1:]
    sys.argv = [module, *rest]
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        with contextlib.suppress(SystemExit):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
