"""The report from saved results: the comparison (`compare`, `stats`), `report.md` (`markdown`),
its plots (`write`, `training_curves`)."""

from hdee.report.write import rich_table, write_report

__all__ = ["rich_table", "write_report"]
