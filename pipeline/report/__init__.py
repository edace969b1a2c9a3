"""What people read: model cards (card.py), the run report (report.py) and its plot (plots.py)."""
