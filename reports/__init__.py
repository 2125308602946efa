"""Report generation from stored result rows."""
