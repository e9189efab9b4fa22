"""duplex-factory: synthetic two-channel conversational speech for full-duplex speech LMs."""

__version__ = "0.1.0"
