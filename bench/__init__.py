"""Benchmarks: measured in one run, reported as ratios and percentiles, never asserted."""
