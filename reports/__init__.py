"""Reports: the describe, training and eval HTML pages and all charts, from Jinja2 templates."""
