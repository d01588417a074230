"""Livestreams (DESIGN.md §13): a stream per ``livestream`` post, provisioned through a provider
(``media.live.providers``: the embedded ``local`` RTMP ingest, or Mux), its live HLS served under a
signed folder grant, its recording turned into a ``livestream_recording`` medium for the video
pipeline, and its status told to the creator.

Layout: ``models`` (rows), ``keys`` (stream keys: hashed for lookup, encrypted for the owner),
``providers`` (the provider interface and the two providers), ``services`` (every state change of a
stream), ``ingest`` (the local RTMP ingest process: nginx-rtmp supervised by Python). Dependency
arrows point one way: content's API and moderation call into this package; it calls
``content.services`` (never content's API) and ``media.processing``; it never imports actors.
"""
