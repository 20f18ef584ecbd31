"""imgbundle: move container images into air-gapped sites as one verifiable bundle."""

__version__ = "0.1.0"
