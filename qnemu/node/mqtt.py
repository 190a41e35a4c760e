"""Node extension: mqtt (being written)."""

__all__ = ["extension"]


def extension(node, topology, plan):
    """Nothing yet: this node runs no mqtt extension."""
    return None
