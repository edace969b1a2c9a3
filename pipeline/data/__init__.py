"""Text data for calibration (and, later, evaluation): where it comes from and how it becomes token ids."""
