"""Evaluation commands beyond ``realcam test`` (``realcam eval ...``): each sub-command is its own module."""
