"""The camera loop and its I/O: sources, the loop, events, sinks (NG store, overlay), `daad run`."""
