"""Small helpers with side effects at the edges: secrets, progress lines, process groups."""
