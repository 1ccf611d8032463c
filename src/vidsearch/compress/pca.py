"""PCA with optional whitening (``faiss.PCAMatrix`` inside), scikit-learn style."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.compress.pq import as_matrix, check_is_fitted
from vidsearch.errors import ConfigError


class PCA:
    """Project onto the ``n_components`` directions of largest variance, optionally whitened.

    ``transform(x) = (x - mean_) @ A.T`` where ``A = components_`` (rows of unit norm), or
    ``diag(explained_variance_ ** -0.5) @ components_`` when whitening, so each output component
    has unit variance on the training data.

    Args:
        n_components: output dimension, at most min(n_vectors, n_features) of the training data.
        whiten: scale each component to unit variance.
        epsilon: added to the variances before whitening (guards near-zero variances).

    Attributes:
        mean_: (d,) float32 training mean.
        components_: (n_components, d) float32 principal directions, by decreasing variance.
        explained_variance_: (n_components,) float32 variances along them.
        n_features_in_: d.
    """

    def __init__(self, n_components: int, whiten: bool = False, epsilon: float = 0.0) -> None:
        self.n_components = n_components
        self.whiten = whiten
        self.epsilon = epsilon
        self.components_: NDArray[np.float32] | None = None

    def fit(self, X: Any, y: Any = None) -> PCA:
        """Fit on (N, d) float32 vectors."""
        import faiss

        x = as_matrix(X)
        n, d = x.shape
        k = self.n_components
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= min(n, d):
            raise ConfigError(f"n_components must be an integer in [1, min(n_vectors, n_features)] = [1, {min(n, d)}], "
                              f"got {k!r}; lower n_components or pass more vectors")
        if self.epsilon < 0:
            raise ConfigError(f"epsilon must be >= 0, got {self.epsilon}")
        pca = faiss.PCAMatrix(d, int(k), -0.5 if self.whiten else 0.0, False)
        pca.epsilon = float(self.epsilon) * n  # FAISS works with the scatter matrix, n x the covariance
        pca.max_points_per_d = max(1000, n // d + 1)  # train on all the vectors given
        pca.train(x)
        eigenvalues = faiss.vector_to_array(pca.eigenvalues)[:k] / n  # variances
        if self.whiten:  # FAISS divides by sqrt(scatter eigenvalue): rescale to unit variance
            A = faiss.vector_to_array(pca.A) * np.float32(np.sqrt(n))
            faiss.copy_array_to_vector(A.astype(np.float32), pca.A)
            faiss.copy_array_to_vector((faiss.vector_to_array(pca.b) * np.float32(np.sqrt(n))).astype(np.float32), pca.b)
        if self.whiten and (eigenvalues + self.epsilon <= 0).any():
            raise ConfigError(f"{int((eigenvalues + self.epsilon <= 0).sum())} of the {k} components have zero variance, "
                              f"so they cannot be whitened; lower n_components or set epsilon > 0")
        self._pca = pca
        self.n_features_in_ = d
        self.mean_ = faiss.vector_to_array(pca.mean).astype(np.float32)
        self.components_ = faiss.vector_to_array(pca.PCAMat).reshape(d, d)[:k].astype(np.float32)
        self.explained_variance_ = eigenvalues.astype(np.float32)
        A = faiss.vector_to_array(pca.A).reshape(k, d).astype(np.float64)
        self._matrix = A.astype(np.float32)
        self._inverse = np.linalg.pinv(A).astype(np.float32)  # (d, k); A has orthogonal rows
        return self

    def transform(self, X: Any) -> NDArray[np.float32]:
        """(N, d) float32 -> (N, n_components) float32."""
        check_is_fitted(self, "components_", "transform")
        return self._pca.apply(as_matrix(X, n_features=self.n_features_in_))

    def fit_transform(self, X: Any, y: Any = None) -> NDArray[np.float32]:
        return self.fit(X).transform(X)

    def inverse_transform(self, Y: Any) -> NDArray[np.float32]:
        """(N, n_components) float32 -> (N, d) float32, the projection back into the input space."""
        check_is_fitted(self, "components_", "inverse_transform")
        y = as_matrix(Y, "Y", self.n_components)
        return np.ascontiguousarray(y @ self._inverse.T + self.mean_[None, :])

    def to_faiss(self) -> Any:
        """The trained ``faiss.PCAMatrix`` (a VectorTransform for ``IndexPreTransform``)."""
        check_is_fitted(self, "components_", "to_faiss")
        return self._pca
