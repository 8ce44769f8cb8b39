"""Plant outputs of `daad run`: the reject pin, the MQTT publisher and the Prometheus metrics.

Each is a sink (runtime.line.loop.Sink), started and stopped by `daad run`, that never blocks
the loop; each imports its optional package (extra `plant` or `jetson`) only when asked for.
"""
