"""The model runtime: loading, device placement, decoding, dynamic batching. Knows nothing of HTTP."""
