"""Data build: sources, SIF trajectories, narrators, records, shards and their checks; the depth providers
(the colour depth image for an RGB image without one) and the OpenAI chat client (``chat_http``) that the
VLM narrator, the depth providers and the evaluation's endpoint generator share.

May import ``sifthinker.config``, ``method``, ``scenes``, ``storage``, ``runtime`` and ``names``.
"""
