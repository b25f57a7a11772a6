#!/bin/sh
# Rebuild the reference result NAME from its finished sweep directory, then measure how closely one of its
# runs reproduces. Usage (from the repository root):
#   KWLAB_DATA=/path/to/folder/with/cifar10-jpg.zip sh data/results/publish.sh NAME SWEEP_DIR [METHOD]
# SWEEP_DIR is the --out of `kwlab sweep data/results/NAME/sweep.yaml`; METHOD (default static) picks the run
# to reproduce: the one of that method with the fewest parameters, seed 0 ("none": reproduce nothing).
set -e
NAME=${1:?usage: publish.sh NAME SWEEP_DIR [METHOD]}
SWEEP=${2:?usage: publish.sh NAME SWEEP_DIR [METHOD]}
METHOD=${3:-static}
HERE=data/results/$NAME
PY=${PY:-.venv/bin/python}
# 1. results.csv, summary.csv, figures/ and README.md (finding generated from the numbers); no checkpoints
$PY -c "from kwlab.experiments.report import publish; print(publish('$SWEEP', '$HERE'))"
[ "$METHOD" = none ] && exit 0
# 2. reproduce one run on one thread, as recorded
RUN=$($PY -c "import pandas as pd; d = pd.read_csv('$HERE/results.csv'); \
d = d[(d['method'] == '$METHOD') & (d['seed'] == 0)].sort_values('params'); print(d['run_id'].iloc[0])")
rm -rf runs/repro-$NAME
OMP_NUM_THREADS=1 $PY -m kwlab reproduce $HERE --run "$RUN" --out runs/repro-$NAME --no-progress \
  | tee $HERE/reproduce-$METHOD.txt
