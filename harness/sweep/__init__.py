"""Running a sweep: the driver loop, one point measured window by window through Locust, the
stability rule, server telemetry from Prometheus, progress output.
"""
