"""Class-level evaluation of a feature space: retrieval metrics per class, and 2-d embedding maps.

``retrieval`` scores how well nearest neighbours share a query's class (precision@k, R-precision,
MAP@R, mAP, top-1 and vote accuracy), ``embedding`` draws the features as a t-SNE or UMAP map.
"""
