"""What a run leaves on disk: point results, run.json with the environment, results.csv, and the
one loader that reads a run folder back.
"""
