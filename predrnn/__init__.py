"""PredRNN-V2 spatiotemporal forecasting pipeline."""
__version__ = "0.1.0"
