"""Reports: one module per output format, each reading a summary model built from the store."""
