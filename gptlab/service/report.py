"""The run report as a download: report.md (gptlab.report) with the run's loss.png beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gptlab.events import EventError
from gptlab.report import write_report
from gptlab.runfolder import LOSS_PLOT
from gptlab.runs import RunError
from gptlab.service.base import LabBase

REPORT_FOLDER = "report"


@dataclass(frozen=True)
class ReportFiles:
    report: Path  # report.md, under the downloads root
    files: tuple[Path, ...]  # report.md, and the loss.png it shows when the run has one


class Report(LabBase):
    def report(self, *, owner: str | None, run_id: str | None) -> ReportFiles:
        """The run's report, written afresh (a run still training gets its report so far)."""
        if not run_id:
            raise RunError("There is no run yet; start one first, then download its report.")
        folder = self.registry.folder(self.owner_or_new(owner), run_id)
        out = self.downloads_root / folder.name / REPORT_FOLDER
        try:
            path = write_report(folder, out)
        except EventError:  # its message names the server's path; this one does not
            raise RunError("This run's metrics log holds a line GPT Lab cannot read, so its report cannot be "
                           "written.") from None
        plot = out / LOSS_PLOT
        return ReportFiles(report=path, files=(path, plot) if plot.is_file() else (path,))
