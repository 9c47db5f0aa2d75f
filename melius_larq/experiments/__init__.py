"""Experiments that train and deploy: they use both ``melius_larq.zoo`` and
``melius_larq.deploy`` (which never import each other), e.g.
``python -m melius_larq.experiments.meliusnet_vs_mobilenet``."""
