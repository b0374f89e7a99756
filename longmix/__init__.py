"""longmix: long-context continual pretraining toolkit."""

__version__ = "0.1.0"
