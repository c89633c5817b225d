"""Metrics (torchmetrics) and Composer callbacks / loggers of ours."""
