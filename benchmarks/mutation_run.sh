#!/usr/bin/env bash
# Mutation testing of Pro-PULSE's core modules with mutmut 3 (outside CI; docs/testing.md, "Mutation testing").
#
# Mutated: the method's core modules (MUT_ONLY, below): the loss equations (losses/propulse.py, Eq. (1)-(3),
# (5)-(7); losses/gan.py, Eq. (8), (9), R1, path length), the w+ composition of Eq. (4)/(10) (inference.py,
# encode_ws and the upsampler), the progressive schedule (callbacks/progressive.py) and the evaluation's metric
# wiring (evaluation/suite.py). Every mutant runs only the tests that call the function it mutates (mutmut's
# stats), taken from the fast selection MUT_TESTS, one mutant at a time, one thread, stopping at the first
# failure. A mutant no test notices "survives"; docs/testing.md lists the survivors judged harmless.
#
#   pip install mutmut                                   # 3.x; into the environment that runs the tests
#   bash benchmarks/mutation_run.sh                       # snapshot HEAD, run, print the scores, remove the snapshot
#
# Environment:
#   MUT_DIR      the snapshot (a git worktree of HEAD; default /tmp/lit_propulse_mutation). The working tree is
#                never touched: other people may be editing it; the snapshot's commit is printed.
#   MUT_OVERLAY  paths (space separated) copied from the working tree over the snapshot's, e.g. tests not yet
#                committed: MUT_OVERLAY="tests/evaluation tests/losses/test_gan.py"
#   MUT_ONLY     the files to mutate (space separated; default: the five core modules above)
#   MUT_KEEP=1   keep the snapshot afterwards, to look at mutants: cd $MUT_DIR && mutmut results; mutmut show NAME
#
# Cost on one CPU thread: ~80 s to collect the stats, then ~1-10 s per mutant (the full run: see docs/testing.md).
set -euo pipefail

REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
MUT_DIR=${MUT_DIR:-/tmp/lit_propulse_mutation}
MUT_ONLY=${MUT_ONLY:-"lit_propulse/losses/propulse.py lit_propulse/losses/gan.py lit_propulse/inference.py lit_propulse/callbacks/progressive.py lit_propulse/evaluation/suite.py"}
MUT_OVERLAY=${MUT_OVERLAY:-}
# The fast tests of these modules. Left out: tests/networks (feature networks only: no mutated function runs),
# the end-to-end stage runs of tests/test_propulse_stages.py and tests/test_paper_fidelity.py (minutes; their
# fast tests of these modules are in), and the long tests of tests/test_evaluation.py (2-process DDP, CLI
# runs, the random-weight Inception FID).
MUT_TESTS=(
  tests/losses tests/inference tests/modules tests/evaluation tests/test_evaluation.py
  "tests/test_propulse_stages.py::test_callback_switches_at_configured_steps"
  "tests/test_paper_fidelity.py::test_paper_normalisation_of_eq_2_3_6"
  "tests/test_paper_fidelity.py::test_e_w_is_not_called_at_the_full_scale"
)
MUT_DESELECT=(  # by node id (a -k expression would also drop tests whose names merely contain the words)
  tests/test_evaluation.py::test_ddp_two_processes_count_each_test_image_once
  tests/test_evaluation.py::test_inception_fid_from_a_weights_file
  tests/test_evaluation.py::test_cli_test_writes_the_side_by_side_report
  tests/test_evaluation.py::test_paper_eval_yaml_lists_missing_method_files_and_leaves_metric_files_to_skipping
)

command -v mutmut >/dev/null || { echo "error: mutmut not found: pip install mutmut" >&2; exit 1; }
if [ -e "$MUT_DIR" ]; then
  echo "error: $MUT_DIR exists; remove it (git -C $REPO worktree remove --force $MUT_DIR) or set MUT_DIR" >&2
  exit 1
fi
git -C "$REPO" worktree add --detach "$MUT_DIR" HEAD >/dev/null
cleanup() { [ "${MUT_KEEP:-0}" = 1 ] || git -C "$REPO" worktree remove --force "$MUT_DIR"; }
trap cleanup EXIT
COMMIT=$(git -C "$MUT_DIR" rev-parse HEAD)
for p in $MUT_OVERLAY; do
  rm -rf "${MUT_DIR:?}/$p"
  mkdir -p "$(dirname "$MUT_DIR/$p")"
  cp -r "$REPO/$p" "$MUT_DIR/$p"
done

# mutmut reads its settings from setup.cfg's [mutmut] section: written into the snapshot only.
{
  echo
  echo "[mutmut]"
  echo "source_paths = lit_propulse"
  echo "only_mutate ="
  for f in $MUT_ONLY; do echo "    $f"; done
  echo "also_copy ="
  echo "    datamodules"
  echo "    experiments"
  echo "pytest_add_cli_args ="
  echo "    -x"
  echo "    -q"
  echo "    -p"
  echo "    no:cacheprovider"
  for t in "${MUT_DESELECT[@]}"; do echo "    --deselect"; echo "    $t"; done
  echo "pytest_add_cli_args_test_selection ="
  for t in "${MUT_TESTS[@]}"; do echo "    $t"; done
  echo "timeout_multiplier = 5.0"
  echo "timeout_constant = 10.0"
} >> "$MUT_DIR/setup.cfg"

cd "$MUT_DIR"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0 WANDB_MODE=disabled
# The snapshot, not the (editable-installed) working tree; mutmut puts its mutated copy, mutants/, before it.
# (Not mutants/ here: a path cached before mutmut has filled it can hide mutants/tests from pytest.)
export PYTHONPATH="$MUT_DIR${PYTHONPATH:+:$PYTHONPATH}"
echo "mutation run of $COMMIT${MUT_OVERLAY:+ (+ working-tree $MUT_OVERLAY)} in $MUT_DIR"
start=$(date +%s)
mutmut run --max-children 1 > mutmut_run.log 2>&1 || { tail -40 mutmut_run.log; exit 1; }
echo "mutmut run: $(( $(date +%s) - start )) s"
mutmut results --all true > mutmut_results.txt 2>/dev/null || true

# Score per module: killed / (killed + survived + timeout); "no tests" counted apart.
python - "$COMMIT" <<'EOF'
import collections, re, sys
counts = collections.defaultdict(collections.Counter)
survivors = collections.defaultdict(list)
for line in open("mutmut_results.txt"):
    m = re.match(r"\s*(\S+): (.+)$", line)
    if not m:
        continue
    name, status = m.group(1), m.group(2).strip()
    module = re.split(r"\.(?:x_|xǁ)", name)[0]
    counts[module][status] += 1
    if status != "killed":
        survivors[module].append((name, status))
print(f"commit {sys.argv[1]}")
print(f"{'module':45s} {'killed':>7s} {'survived':>9s} {'other':>6s} {'score':>7s}")
total = collections.Counter()
for module, c in sorted(counts.items()):
    other = sum(v for k, v in c.items() if k not in ("killed", "survived"))
    n = sum(c.values())
    total.update(c)
    print(f"{module:45s} {c['killed']:7d} {c['survived']:9d} {other:6d} {100 * c['killed'] / max(n, 1):6.1f}%")
n = sum(total.values())
print(f"{'all':45s} {total['killed']:7d} {total['survived']:9d} {n - total['killed'] - total['survived']:6d} {100 * total['killed'] / max(n, 1):6.1f}%")
print("\nnot killed:")
for module, items in sorted(survivors.items()):
    for name, status in items:
        print(f"  {status:10s} {name}")
EOF
if [ "${MUT_KEEP:-0}" = 1 ]; then
  echo "snapshot kept: cd $MUT_DIR && mutmut show <name>; remove with: git -C $REPO worktree remove --force $MUT_DIR"
fi
