"""What to run: the sweep spec and its presets, the batching field table, points and their keys,
strategies that walk them, and pre-flight checks. Pure: no process is started here.
"""
