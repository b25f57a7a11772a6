#!/bin/sh
# Rebuild this reference result from its finished sweep directory, then measure how closely one run
# reproduces. Usage (from the repository root):
#   KWLAB_DATA=/path/to/folder/with/cifar10-jpg.zip sh data/results/cifar10_resnet20_b_sharing/publish.sh SWEEP_DIR
# SWEEP_DIR is the --out of `kwlab sweep data/results/cifar10_resnet20_b_sharing/sweep.yaml`.
set -e
SWEEP=${1:?usage: publish.sh SWEEP_DIR}
HERE=data/results/cifar10_resnet20_b_sharing
PY=${PY:-.venv/bin/python}
# 1. results.csv, summary.csv, figures/ and README.md (finding generated from the numbers); no checkpoints
$PY -c "from kwlab.experiments.report import publish; print(publish('$SWEEP', '$HERE'))"
# 2. reproduce the cheapest run (static 8-16-32, seed 0) on one thread, as recorded
RUN=$($PY -c "import pandas as pd; d = pd.read_csv('$HERE/results.csv'); \
d = d[(d['method'] == 'static') & (d['seed'] == 0)].sort_values('params'); print(d['run_id'].iloc[0])")
rm -rf runs/repro-reference
OMP_NUM_THREADS=1 $PY -m kwlab reproduce $HERE --run "$RUN" --out runs/repro-reference --no-progress \
  | tee $HERE/reproduce.txt
