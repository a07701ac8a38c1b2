"""The SIF method itself: the trace format, box geometry and coordinate frames, how rewards read a
completion's areas, answer verification, the user prompt, relative depth maps, and drawing a trace on its
image (method spec, sections 1-3 and 6).

Pure functions over text, numbers and images: this part imports nothing else of the library (not even
``sifthinker.names``), so every other part can build on it.
"""
