"""MLflow: one run tree per pipeline run (``tracking``), registered model versions and aliases
(``model_versions``, ``logged_models``, ``lineage``, ``rollback``) and the quality gate that decides whether
a model is registered (``gate``).

May import ``sifthinker.config``, ``sifthinker.storage`` and ``sifthinker.names``.
"""
