"""Workstation side, before lowering: checkpoints, the fp reference model, text data, evaluation.

Later stages (observers, transforms, weight quantizers, recipes) build on these.
"""
