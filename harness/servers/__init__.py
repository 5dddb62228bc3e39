"""What serves the model for a point: targets (reference, tfserving, external), replica processes
and their flags, ``batchbench serve``.
"""
