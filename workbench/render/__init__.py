"""Results as the user reads them: text, HTML and JSON."""
