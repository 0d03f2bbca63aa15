"""The command line (``taskrunner ...``), the worker process, the demo and the bench report.

The top layer: it uses the runtime and the jobs, and nothing below imports it.
"""
