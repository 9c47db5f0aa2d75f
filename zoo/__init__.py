"""zoo: datasets, training recipes and evaluation for melius_larq models."""

from melius_larq.zoo.folder import image_folder

__all__ = ["image_folder"]
