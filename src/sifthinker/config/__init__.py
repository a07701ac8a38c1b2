"""One config object per run: ``RunConfig`` (``run_config``), loaded from a recipe YAML, its sections
(``data_config``, ``model_config``, ``platform_config``, ``pretrain_config``) and the typed, checked loading
behind them (``schema``).

May import ``sifthinker.names`` only: every other part reads its settings from here.
"""
