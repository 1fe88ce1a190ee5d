"""The many-calls benchmark of `sip2rtmp serve`: `runner.py` holds one load of N calls
against the lab, `report.py` turns the loads into the results block."""
