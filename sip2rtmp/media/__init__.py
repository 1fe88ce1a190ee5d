"""Everything between decoded RTP payloads and the RTMP servers, plus audio toward the callee.

The package itself imports nothing: PyAV, numpy and libx264 load with the module that needs
them, when the run first needs it (a run's first REGISTER never waits for them).
"""
