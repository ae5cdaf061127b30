"""dsntnn-compatible API (work in progress)."""
