"""``python -m budget_exporter`` and the ``budget-exporter`` command.

Only light modules are imported before the SIGHUP handler is in place: a SIGHUP
that arrives while the exporter starts is kept (and served once it runs) instead
of killing the process.
"""

from budget_exporter.runtime.reload import catch_sighup


def run() -> int:
    sighup = catch_sighup()
    from budget_exporter.cli import main

    return main(sighup=sighup)


if __name__ == "__main__":
    raise SystemExit(run())
