"""Linear probes for module identity, with the baselines that make their accuracy mean something.

    probe = LinearProbe(seed=0).fit(X_train, y_train)       # standardized multinomial logistic regression
    probe.score(X_test, y_test)                             # accuracy
    rows = probe_layers(acts, "skill", train, test)         # one row per layer: acc, majority, control,
                                                            #   selectivity, identification
    rows = probe_report(acts, "skill")                      # "seen" (grouped holdout) and "unseen"
                                                            #   (train on seen compositions, test on unseen)

Baselines (docs/design.md §probes):
- majority: predict the training set's most frequent label.
- control task (Hewitt & Liang 2019): each surface type gets a random but consistent label drawn
  from the real labels' distribution; a probe that reaches high control accuracy can memorise
  surface types, so selectivity = accuracy - control accuracy is the part of the accuracy the
  surface does not explain. The type is the (previous token, token) bigram at the probed position
  (``window=2``, the default): at ``before`` positions the token alone is always a separator
  (``>`` or ``;``), which would leave a control task with at most two types; ``window=1`` is
  Hewitt & Liang's token type.
- identification score (``identification_score``): chance-corrected accuracy of the best
  one-to-one matching of predicted classes to true modules; ~0 at chance, 1 when identified.
- the same probe on a random-init model (run ``probe_report`` on its activations).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

IDENTIFIED = 0.9  # identification score we call "identified" (fixed before looking at results)


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Standardize features, then multinomial logistic regression (lbfgs, L2 with inverse strength C).

    A training set with a single class gives a constant predictor (logistic regression needs two).
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, seed: int = 0):
        self.C, self.max_iter, self.seed = C, max_iter, seed

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            self.model_ = None
            return self
        # Probe problems are small: multithreaded BLAS only adds contention (100x slower on a busy machine).
        with threadpool_limits(limits=1):
            self.model_ = make_pipeline(
                StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
            ).fit(X, y)
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=np.float64)
        if self.model_ is None:
            return np.full(len(X), self.classes_[0])
        return self.model_.predict(X)


# --- baselines and scores -------------------------------------------------------------------


def majority_accuracy(y_train, y_test) -> float:
    """Accuracy on ``y_test`` of always predicting the most frequent label of ``y_train``."""
    vals, counts = np.unique(y_train, return_counts=True)
    return float(np.mean(np.asarray(y_test) == vals[np.argmax(counts)]))


def surface_types(acts, window: int = 2) -> np.ndarray:
    """(N, window) surface type of each row: its token id, and with window=2 the token before it."""
    if window not in (1, 2):
        raise ValueError(f"window must be 1 or 2, got {window}")
    return acts.token[:, None] if window == 1 else np.stack([acts.prev, acts.token], axis=1)


def control_labels(types, y, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang control task: each distinct type (row of ``types``) gets one random label.

    Labels are drawn from the empirical distribution of ``y`` (same classes, same cardinality);
    the map depends only on the set of types and ``seed``, so compute it once over train and test.
    """
    types = np.asarray(types).reshape(len(types), -1)
    classes, counts = np.unique(y, return_counts=True)
    uniq, inverse = np.unique(types, axis=0, return_inverse=True)
    rng = np.random.default_rng(seed)
    return rng.choice(classes, size=len(uniq), p=counts / counts.sum())[inverse.reshape(-1)]


def _matched_count(y_true, y_pred) -> int:
    _, ti = np.unique(y_true, return_inverse=True)
    _, pi = np.unique(y_pred, return_inverse=True)
    confusion = np.zeros((ti.max() + 1, pi.max() + 1), dtype=np.int64)
    np.add.at(confusion, (ti, pi), 1)
    r, c = linear_sum_assignment(confusion, maximize=True)
    return int(confusion[r, c].sum())


def matched_accuracy(y_true, y_pred) -> float:
    """Accuracy after the best one-to-one matching of predicted classes to true classes (Hungarian)."""
    return _matched_count(y_true, y_pred) / len(y_true)


def identification_score(y_true, y_pred, n_perm: int = 20, seed: int = 0) -> float:
    """How well predictions identify the true modules, in [0, 1]: ~0 at chance, 1 when perfect.

    m = matched_accuracy(y_true, y_pred); chance = mean matched accuracy of ``y_pred`` shuffled
    against ``y_true`` (keeps both label distributions and the matching's own optimism, like the
    adjusted Rand index's expected index); score = clip((m - chance) / (1 - chance), 0, 1).
    NaN when y_true has a single class (nothing to identify).
    """
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    n, m = len(y_true), _matched_count(y_true, y_pred)
    rng = np.random.default_rng(seed)
    # integer counts, so a predictor no better than its own shuffles scores exactly 0
    chance = sum(_matched_count(y_true, rng.permutation(y_pred)) for _ in range(n_perm)) / n_perm
    if m <= chance:
        return 0.0
    return float(min(1.0, (m - chance) / (n - chance)))


def grouped_holdout(groups, test_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean train / test masks holding out whole groups (examples): no example on both sides."""
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    n_test = max(1, round(test_fraction * len(uniq))) if len(uniq) > 1 else 0
    test_groups = rng.choice(uniq, size=n_test, replace=False)
    test = np.isin(groups, test_groups)
    return ~test, test


# --- probing every layer --------------------------------------------------------------------


def probe_layers(
    acts, target: str, train, test, window: int = 2, C: float = 1.0, seed: int = 0
) -> list[dict]:
    """Fit a probe per layer on rows ``train``, score it on rows ``test`` (boolean masks).

    Each row: layer, n_train, n_test, classes (in the training labels), acc, majority, control,
    selectivity (acc - control) and ident (identification_score of the probe's test predictions).
    """
    y = acts.labels(target)
    y_ctrl = control_labels(surface_types(acts, window), y, seed)
    train, test = np.asarray(train), np.asarray(test)
    rows = []
    for li, name in enumerate(acts.layer_names):
        row = {"layer": name, "n_train": int(train.sum()), "n_test": int(test.sum()),
               "classes": len(np.unique(y[train])) if train.any() else 0}
        if not train.any() or not test.any():
            nan = dict.fromkeys(("acc", "majority", "control", "selectivity", "ident"), float("nan"))
            rows.append({**row, **nan})
            continue
        X = acts.X[li]
        pred = LinearProbe(C=C, seed=seed).fit(X[train], y[train]).predict(X[test])
        ctrl = LinearProbe(C=C, seed=seed).fit(X[train], y_ctrl[train]).score(X[test], y_ctrl[test])
        acc = float(np.mean(pred == y[test]))
        rows.append({**row, "acc": acc, "majority": majority_accuracy(y[train], y[test]),
                     "control": float(ctrl), "selectivity": acc - float(ctrl),
                     "ident": identification_score(y[test], pred, seed=seed)})
    return rows


def probe_report(acts, target: str, window: int = 2, C: float = 1.0, seed: int = 0,
                 test_fraction: float = 0.25) -> list[dict]:
    """Per layer, two evaluations of the ``target`` probe, each row tagged with ``eval``:

    seen    train and test on seen compositions, holding out whole examples (``grouped_holdout``);
    unseen  train on every seen row, test on the rows of unseen compositions: does the
            representation of a module carry over to compositions training never showed?
    """
    seen = acts.seen
    tr, te = np.zeros(len(seen), dtype=bool), np.zeros(len(seen), dtype=bool)
    if seen.any():
        tr[seen], te[seen] = grouped_holdout(acts.example[seen], test_fraction, seed)
    rows = [{"eval": "seen", **r} for r in probe_layers(acts, target, tr & seen, te & seen, window, C, seed)]
    rows += [{"eval": "unseen", **r} for r in probe_layers(acts, target, seen, ~seen, window, C, seed)]
    return rows
