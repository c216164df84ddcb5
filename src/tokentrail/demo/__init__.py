"""``tokentrail demo``: a small multi-agent program, recorded and reported, against the local simulator.

Everything is real except the model: the openai SDK (sync, async, streaming, retries, embeddings)
and a plain-httpx helper talk over loopback to ``tokentrail.sim``, which reports real token counts.
"""
