"""`nmt serve`: the HTTP app (`app`), its request schemas, the thread that batches requests (`batcher`) and its
Prometheus metrics."""
