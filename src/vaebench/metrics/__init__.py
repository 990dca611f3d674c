"""Evaluation metrics."""

from __future__ import annotations

from vaebench.metrics.disentanglement import (
    dci,
    dci_from_importance,
    disentanglement_report,
    factor_vae_score,
    factor_vae_score_from_fn,
    mig,
    sap,
)
from vaebench.metrics.features import (
    ClassifierFeatures,
    FeatureExtractor,
    InceptionFeatures,
    feature_network,
)
from vaebench.metrics.likelihood import (
    elbo,
    has_likelihood,
    likelihood_report,
    log_likelihood,
)
from vaebench.metrics.reconstruction import reconstruction_error, reconstruction_mse
from vaebench.metrics.representation import (
    knn_accuracy,
    latent_codes,
    linear_probe_accuracy,
    representation_report,
)
from vaebench.metrics.sample_quality import (
    feature_frechet_distance,
    frechet_distance,
    gaussian_stats,
    precision_recall,
    sample_quality,
)

__all__ = ["elbo", "has_likelihood", "likelihood_report", "log_likelihood",
           "reconstruction_error", "reconstruction_mse"]
__all__ += ["ClassifierFeatures", "FeatureExtractor", "InceptionFeatures", "feature_network",
            "feature_frechet_distance", "frechet_distance", "gaussian_stats", "knn_accuracy",
            "latent_codes", "linear_probe_accuracy", "precision_recall",
            "representation_report", "sample_quality"]
__all__ += ["dci", "dci_from_importance", "disentanglement_report", "factor_vae_score",
            "factor_vae_score_from_fn", "mig", "sap"]
