"""``python -m budget_exporter`` and the ``budget-exporter`` command: catch SIGHUP, then
import and run the CLI.  Keep it light: nothing heavy may load before the handler is in.
"""

from budget_exporter.runtime.reload import catch_sighup


def run() -> int:
    sighup = catch_sighup()
    from budget_exporter.cli import main

    return main(sighup=sighup)


if __name__ == "__main__":
    raise SystemExit(run())
