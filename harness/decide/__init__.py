"""What the measurements mean: the recommendation (ranking, its words, the files and command lines
to deploy it) and the comparison of two runs (the regression gate).
"""
