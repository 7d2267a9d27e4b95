"""Reports: pandas frames of studies, plotly figures, the HTML report."""
