"""HTTP prediction service over exported models (``tools/serve.py``; doc/serving.md).

- :mod:`recstack.serving.app`: the FastAPI application (endpoints, error format, body limits);
- :mod:`recstack.serving.model`: the served export (backend from :mod:`recstack.backends`, uploads
  parsed by the model's own reader);
- :mod:`recstack.serving.batcher`: micro-batching of concurrent requests;
- :mod:`recstack.serving.validation`: request checks that name the field / row / line;
- :mod:`recstack.serving.limits`: header / body timeouts, the connection cap, the memory of request bodies.
"""

from recstack.serving.app import ServingOptions, create_app, uvicorn_config
from recstack.serving.batcher import BatchStats, MicroBatcher
from recstack.serving.validation import RequestError

__all__ = ["ServingOptions", "create_app", "uvicorn_config", "MicroBatcher", "BatchStats", "RequestError"]
