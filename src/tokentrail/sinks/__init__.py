"""Where records go: the pipeline (queue, processing, background writer) and the sinks it feeds."""
