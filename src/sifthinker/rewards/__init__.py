"""The GRPO-SIF rewards (method spec, section 3): the four reward functions with TRL's signature
(``reward_funcs``), the original code's rewards for ``parity: original`` (``original``), the strict reading
of completions and ground truth (``inputs``), the LLM judge for free-form answers (``judge``) and the
answer-progress stores (``progress``).

May import ``sifthinker.method`` and ``sifthinker.names`` only: rewards are scored the same way in
training, tests and parity checks, with no config, model or tracking in sight.
"""
