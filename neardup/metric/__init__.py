"""Supervised deep metric learning (``neardup train``): labelled images, pytorch-metric-learning losses and miners,
an embedding head, on the training engine shared with ``finetune`` (:mod:`neardup.simclr.engine`).

Modules: ``objectives`` (the loss and miner registries), ``config`` (TrainConfig), ``data`` (training labels,
views, m-per-class sampling), ``validate`` (class-retrieval scores), ``train`` (MetricTask and ``train``).
"""
