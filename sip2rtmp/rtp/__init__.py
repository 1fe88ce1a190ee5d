"""RTP and RTCP, sans-I/O: packets, statistics, jitter buffer, DTMF and video payloads."""
