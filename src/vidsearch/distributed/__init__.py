"""Work spread over a cluster: Spark ingest (``spark``). An entry-point layer: it drives the ``Collection`` writer
and the encode pipeline, and nothing below imports it. PySpark is the ``[spark]`` extra."""
