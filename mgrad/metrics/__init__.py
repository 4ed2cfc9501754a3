"""Per-organ 3D segmentation metrics (Dice, IoU, HD95, ASD) and their reports.

Values follow ``medpy.metric.binary`` ``dc``, ``jc``, ``hd95`` and ``assd``: a surface is a mask minus its binary
erosion with the connectivity-1 cross (voxels on the array edge count as surface); HD95 is the 95th percentile
(``numpy.percentile``, linear) of both directed surface-to-surface distance sets put together, ASD their mean.

Speed: Dice and IoU of all classes come from one confusion matrix; surfaces are extracted inside each class's
bounding box of prediction and ground truth (everything outside is background for both masks, so the erosion is
unchanged) and extracted once for both HD95 and ASD; the nearest surface voxel is found with a k-d tree (CPU) or
an exact pairwise search on the GPU (CUDA tensors), never with a full-volume distance transform.

Protocols for a class missing from the prediction and/or the ground truth of a case:

==========================  ====================================  =====================================
case                        ``"default"``                         ``"transunet"`` (published rules)
==========================  ====================================  =====================================
both non-empty              computed                              computed, distances in voxels
GT empty, prediction not    Dice 0, IoU 0, HD95/ASD NaN           Dice 1, IoU 1, HD95 0, ASD 0
prediction empty, GT not    Dice 0, IoU 0, HD95/ASD NaN           all 0
both empty                  all NaN                               all 0
==========================  ====================================  =====================================

Means skip NaN and the report counts the empty cases per class. ``"transunet"`` ignores the spacing (TransUNet's
``test_single_volume`` calls medpy without it); with no NaN, a mean over classes of per-class means equals its
mean over classes, then over cases.

Why not ``monai.metrics.HausdorffDistanceMetric(percentile=95)``: MONAI takes the 95th percentile of each directed
distance set and reports the larger of the two, whereas medpy's ``hd95`` (which TransUNet and the MGRAD-UNet paper
report) takes the 95th percentile of both sets pooled. The two differ whenever the surfaces are not symmetric, so
numbers comparable with the published tables need medpy's definition.

Modules: :mod:`mgrad.metrics.surface` (the kernels), :mod:`mgrad.metrics.case` (one case's metrics),
:mod:`mgrad.metrics.report` (means, CSV/JSON, table).
"""

from mgrad.metrics.case import METRICS, PROTOCOLS, case_metrics
from mgrad.metrics.report import distance_unit, format_table, summarize, write_report

__all__ = ["METRICS", "PROTOCOLS", "case_metrics", "distance_unit", "format_table", "summarize", "write_report"]
