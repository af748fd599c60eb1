"""Apparatus shared by a family of methods. Each module names its users; a helper with a single user
lives in that user's module instead.

    merging     task vectors, TIES trim/elect/disjoint merge, the encoder/head harness
                users: methods.task_arithmetic, methods.ties_merging
    multitask   shared trunk, per-task heads, pluggable task weightings (equal, fixed, uncertainty, GradNorm)
                users: methods.gradnorm, methods.uncertainty_weighting
    rotation    rotations by multiples of 90 degrees as a self-supervised signal
                users: methods.sla, methods.rotnet (crop + flip: replikit.data.augment)

The layers run one way: infrastructure (config, data, models, train, claims, results) <- families <-
methods. Nothing here imports a method.
"""
