"""Reports: studies as pandas frames, plotly figures, and one self-contained HTML file."""

from bwbpf.reports.frame import trials_frame
from bwbpf.reports.html import figures, render, write_report
from bwbpf.reports.record import TrialRecord, best_trial, summary

__all__ = ["TrialRecord", "best_trial", "figures", "render", "summary", "trials_frame",
           "write_report"]
