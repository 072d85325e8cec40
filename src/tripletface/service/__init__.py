"""The HTTP service (``tripletface serve``): a REST API over one loaded encoder and gallery, and
its web page (``static/``, served at ``/``).

``engine.Engine`` does the work (detection in worker processes, chips of concurrent requests
batched through the encoder, the gallery in a thread of its own); ``app.create_app`` puts thin
FastAPI routes, API keys (``keys``), metrics (``metrics``) and JSON errors in front of it.
"""
