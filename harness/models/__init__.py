"""Built-in models to benchmark (``batchbench make-model``); the TensorFlow half is imported only
when a model is built.
"""
