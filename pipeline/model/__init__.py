"""Model artifacts: pins fetched from their sources, verified digests, the lock, format safety."""
