"""Evaluation of super-resolution methods side by side: the papers' Table I / Fig. 7 / Fig. 8 / Table II figures
(layer L5: above the modules and callbacks, below the commands).

* :mod:`.methods` — :class:`SRMethod` and its implementations: :class:`BicubicMethod`,
  :class:`ProPulseMethod` (E_W+ or E_W only, from the stages' exports), :class:`PULSEMethod` (the per-image
  latent search), :class:`ModuleMethod`.
* :mod:`.suite` — :class:`MetricSuite`: one torchmetrics ``MetricCollection`` per method (FID, NIQE,
  attribute-score difference per side-output resolution, identity, LPIPS, PSNR/SSIM, L_DS + ε success
  rate); a metric whose weights file is not given or absent is *skipped with its reason*, any other
  failure raises.
* :mod:`.module` — :class:`EvaluationModule` (``python -m lit_propulse test --config experiments/toy/eval.yaml``)
  and :class:`EvaluationRun`, the test loop's state (runtime and FLOPs per image included).
* :mod:`.callback` — :class:`StageEvaluation`: a training stage scores itself (a metric subset at
  validation, the full suite and report on ``test``).
* :mod:`.report` — :func:`write_report`: ``report.json``, ``report.md``, ``grid.png``, ``strip.png``.
"""

from lit_propulse.evaluation.callback import StageEvaluation
from lit_propulse.evaluation.methods import (
    BicubicMethod,
    ModuleMethod,
    ProPulseMethod,
    PULSEMethod,
    SRMethod,
)
from lit_propulse.evaluation.module import (
    EvaluationModule,
    EvaluationRun,
    runtime_summary,
)
from lit_propulse.evaluation.report import write_report
from lit_propulse.evaluation.suite import MetricSuite

__all__ = [
    "BicubicMethod",
    "EvaluationModule",
    "EvaluationRun",
    "MetricSuite",
    "ModuleMethod",
    "PULSEMethod",
    "ProPulseMethod",
    "SRMethod",
    "StageEvaluation",
    "runtime_summary",
    "write_report",
]
