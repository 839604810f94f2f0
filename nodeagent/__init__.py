"""nodeagent: spot-interruption handler for EKS nodes."""

__version__ = "0.1.0"
