"""deeprestore: look inside convolutional networks and restore images with them."""

__version__ = "0.1.0"
