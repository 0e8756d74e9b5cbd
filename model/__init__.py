"""DAAN and its baselines, losses, metrics, data loading from stores, and the AV-GZSL training/evaluation protocol.

Read top to bottom: ``config`` (every switch), ``data/`` (loader splits, class embeddings, sources, pair
sampling), ``layers`` + ``avca`` (the published baseline), ``daan`` + ``csgm`` (the reconstruction),
``losses``, ``metrics`` (S/U/HM/ZSL, calibrated stacking), ``trainer`` (one stage), ``protocol`` (two
stages, checkpoints, resume) and ``api`` (what the CLI and the workflow engine call).
"""
