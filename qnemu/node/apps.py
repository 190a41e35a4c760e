"""Node extension: apps (being written)."""

__all__ = ["extension"]


def extension(node, topology, plan):
    """Nothing yet: this node runs no apps extension."""
    return None
