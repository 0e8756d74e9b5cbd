"""The avzsl application: the ``avzsl`` CLI and its commands, the workflow stage runner, the extraction
job, reports, and the YAML workflow definitions beside this file (``demo``, ``full``, ``extract``, ``train``,
``benchmarks/*``). Built on ``pipeline`` (the engine), ``extractors`` and ``model``; nothing imports it.
"""
