"""Linear regions (Xiong et al. 2020; Hanin and Rolnick 2019): the published formulas (``formulas``, with the
Theorem 1 algorithms in ``theorem1``; what weights attain and Theorem 1 (ii) checked in ``attained``) and exact
counts for given weights: a layer's arrangement (``arrangement``), a segment (``segment``), a 2D slice (``slice``),
over training (``training``), with the data points they take (``points``); ``cells`` holds the propagation
machinery the segment and slice share."""
