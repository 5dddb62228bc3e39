"""The run folder's file names, declared once for every module that writes or reads them.

``reports/<run-id>/`` holds ``run.json`` and ``points/`` (the sweep), ``results.csv`` (regenerated
from the points), ``max_rate.json`` (a ``find_max_rate`` sweep's searches),
``recommendation.json`` and ``batching_parameters.txt`` (``batchbench recommend``),
``compare.json`` (``batchbench compare`` / ``ci``) and ``report.html`` / ``report.json`` /
``report.png`` (``batchbench report``), ``confirm/`` (a confirmation run: a run folder of its
own, the round as the repeat), and for a search strategy ``search.json`` (its path: every trial,
the best so far, why it stopped) and ``search-study.log`` (a bayesian search's Optuna journal,
which ``--resume`` continues). A multi-model sweep's recommendation adds
``per_model/<model>/batching_params.pbtxt`` (TF Serving's per-model batching file, for the
model's version folder); its servers' folders hold the model config file.
"""

from __future__ import annotations

RUN_FILE = "run.json"
POINTS_DIR = "points"
CSV_FILE = "results.csv"
MAX_RATE_FILE = "max_rate.json"
RECOMMENDATION_FILE = "recommendation.json"
BATCHING_FILE = "batching_parameters.txt"
COMPARE_FILE = "compare.json"
REPORT_HTML_FILE = "report.html"
REPORT_JSON_FILE = "report.json"
REPORT_PNG_FILE = "report.png"
CONFIRM_DIR = "confirm"
PER_MODEL_DIR = "per_model"
# TF Serving's names: a model's own batching parameters (kBatchingParamsFilename, in its version
# folder, read with --enable_per_model_batching_parameters) and the --model_config_file we write.
PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"
MODEL_CONFIG_FILE = "models.config"
SEARCH_FILE = "search.json"
STUDY_FILE = "search-study.log"
