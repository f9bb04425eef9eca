"""Numerical solvers the methods use: `l1_logistic` (the L1 logistic regression behind DFR)."""
