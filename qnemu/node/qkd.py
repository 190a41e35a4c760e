"""Node extension: qkd (being written)."""

__all__ = ["extension"]


def extension(node, topology, plan):
    """Nothing yet: this node runs no qkd extension."""
    return None
