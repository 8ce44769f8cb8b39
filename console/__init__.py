"""The technician's web console: watch, calibrate, review and roll back a line from a browser."""
