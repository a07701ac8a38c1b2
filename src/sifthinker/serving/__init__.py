"""Serving: the KServe model server (`server`), its OpenAI chat schema (`openai_api`) and the
InferenceService rendering / apply (`deploy`).

Submodules are imported on demand: `deploy` and `openai_api` do not import KServe, `server` does.

May import ``sifthinker.cluster``, ``config``, ``data``, ``method``, ``model``, ``registry``, ``storage`` and
``names``.
"""
