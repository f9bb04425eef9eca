"""Scoring and reporting: the evaluator, results files, tables, analysis, figures."""
