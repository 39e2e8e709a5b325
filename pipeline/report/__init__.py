"""The gate report document and its renderings (markdown, HTML)."""
