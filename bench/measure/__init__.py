"""How things are measured: timing, memory, analytic FLOPs and memory, the code's size, and
the machine (threads, calibration peak, meta)."""
