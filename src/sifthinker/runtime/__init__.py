"""What runs around every pipeline stage: the stage wrapper with its MLflow stage run (``stages``,
``stage_logs``), the progress events a stage emits (``events``) and the local console that shows them
(``console``).

May import ``sifthinker.config``, ``sifthinker.registry`` and ``sifthinker.names``.
"""
