"""zoo: datasets, training recipes and evaluation for melius_larq models."""
