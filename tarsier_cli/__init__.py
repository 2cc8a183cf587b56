"""The `tarsier` command line: a thin Typer layer over `engine`, `trainers` and `evaluation`."""
