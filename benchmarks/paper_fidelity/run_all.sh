#!/usr/bin/env bash
# Run every paper-fidelity experiment at the CPU budget, one after another, one thread each.
# Resumable: re-running continues unfinished arms and only re-plots finished ones.
#   mkdir -p runs/paper_fidelity
#   nohup benchmarks/paper_fidelity/run_all.sh > runs/paper_fidelity/run_all.log 2>&1 &
# A subset: EXPS="exp1_stability exp2_depth" benchmarks/paper_fidelity/run_all.sh
# Extra arguments go to every script (e.g. --runs DIR, --report-only).
set -u
cd "$(dirname "$0")/../.."
EXPS=${EXPS:-"exp4_memory exp1_stability exp2_depth exp6_search_vs_none exp5_loss exp3_width"}
for exp in $EXPS; do
  echo "=== $exp $(date -u +%H:%M:%S)"
  python "benchmarks/paper_fidelity/$exp.py" --threads 1 "$@" || echo "!!! $exp failed"
done
echo "=== done $(date -u +%H:%M:%S)"
