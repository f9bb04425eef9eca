"""Numerical solvers the methods use: `l1_logistic` (the L1 logistic regression behind DFR) and `sklearn_l1` (the same fits by scikit-learn on the host)."""
