"""ratecontrol: encode audio at the lowest bitrate that meets a perceptual quality target."""
__version__ = "0.1.0"
__all__ = ["__version__"]
