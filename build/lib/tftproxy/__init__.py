"""tftproxy: transactional boot files for PXE, a drop-in for smart-proxy's TFTP module."""

__version__ = "0.1.0"
