"""What the library knows of a Kubernetes cluster without talking to a model: offline validation of
custom resources against their CRDs (``crds``), what each pipeline step touches and the environment a
cluster gives it (``step_access``), and the base images' pins (``images``). The TrainJob that runs
training on a cluster lives with training (``sifthinker.training.trainjob``).

May import ``sifthinker.config``, ``sifthinker.storage`` and ``sifthinker.names``.
"""
