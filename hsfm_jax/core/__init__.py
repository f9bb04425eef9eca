"""Building blocks every method shares: heads, losses, optimizers, sampling, scaling, selection."""
