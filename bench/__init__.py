"""bench: a reproducible benchmark of why deep convolutional networks are hard to train."""

__version__ = "0.1.0"
