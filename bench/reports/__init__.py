"""Statistics, LaTeX/Markdown/CSV tables and figures from run records."""
