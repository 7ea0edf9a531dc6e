from budget_exporter.lifecycle import catch_sighup

# Installed before the heavier imports: a SIGHUP while the exporter starts is kept.
sighup = catch_sighup()

from budget_exporter.cli import main  # noqa: E402

raise SystemExit(main(sighup=sighup))
