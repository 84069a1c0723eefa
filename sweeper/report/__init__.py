"""The run report: report.html and the analyses summary, built from a finished run folder alone."""
