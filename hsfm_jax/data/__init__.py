"""Features on disk and in memory: the format, splits, device inputs, streaming, synthetic sets."""
