"""The inference library: models behind one interface (interface.py), the decode pass, scenes,
clips, describe and the output writers. Imports nothing from training, evaluation, reports or
the CLI; the public entry points are `tarsier.load` and `tarsier.describe`."""
