"""Reports: studies as pandas frames, plotly figures, and one self-contained HTML file."""

from bwbpf.reports.frame import trials_frame
from bwbpf.reports.html import figures, render, write_report
from bwbpf.reports.record import TrialRecord, best_trial
from bwbpf.reports.standing import summary_rows

__all__ = ["TrialRecord", "best_trial", "figures", "render", "summary_rows", "trials_frame",
           "write_report"]
