"""Numerical solvers the methods use."""
