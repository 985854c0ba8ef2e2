"""The numbers and claims of Pyeon et al. 2021 (SEDONA), each with its table, row and column.

Every cell of Tables 1-8 and 14-15 as the extracted text gives it, in the paper's units (error
rates %, relative FLOPs and parameters %, speed-ups x, GPU days, hours); the decouplings the
paper published (Tables 10-13: the layers with the highest softmax(alpha)_1, in decreasing
order, each with its auxiliary head) as :data:`DECOUPLINGS`, so that they can be trained without
a search (:func:`published_decoupling`). Figures carry no numbers in the text: only claims.
"""

from __future__ import annotations

from ...checks import count
from .records import PaperClaim, PaperValue

__all__ = ["VALUES", "CLAIMS", "DECOUPLINGS", "LAYERS", "published_decoupling"]

_P = "sedona"


def _v(table: str, row: str, column: str, value: float, **kw) -> PaperValue:
    return PaperValue(_P, table, row, column, value, **kw)


# Table 1 (sec. 4.1): auxiliary heads over ResNet-101 on ImageNet, %.
_T1_COLS = ("MLP-SR", "PredSim", "Aux 1", "Aux 2", "Aux 3", "Aux 4")
_T1 = {"Rel. FLOPs": (1.34, 23.63, 1.02, 1.35, 1.43, 1.68), "Rel. # Param.": (129.33, 23.48, 6.38, 7.59, 9.68, 12.37)}
TABLE1 = [_v("Table 1", row, col, val) for row, vals in _T1.items() for col, val in zip(_T1_COLS, vals)]

# Table 2 (sec. 4.2): error rates %, K = 4 for PredSim, DGL and SEDONA; CIFAR-10 at 0.25x width.
_METHODS = ("Backprop", "PredSim", "DGL", "SEDONA")
_T2 = {
    "(a) CIFAR-10": {"VGG-19": (12.31, 13.87, 12.19, 11.58), "ResNet-50": (7.99, 8.93, 8.27, 7.53),
                     "ResNet-101": (7.14, 7.93, 8.30, 6.59), "ResNet-152": (6.35, 7.41, 6.39, 6.13)},
    "(b) Tiny-ImageNet": {"VGG-19": (47.11, 55.30, 48.70, 43.44), "ResNet-50": (46.54, 52.22, 46.04, 45.60),
                          "ResNet-101": (44.50, 46.08, 46.20, 40.88), "ResNet-152": (39.18, 48.24, 42.36, 35.90)},
}
TABLE2 = [_v("Table 2", f"{part} {arch}", method, val) for part, rows in _T2.items() for arch, vals in rows.items()
          for method, val in zip(_METHODS, vals)]

# Table 3 (sec. 4.3): ImageNet. The extracted layout puts the Aux. Ens. tick on the first of each
# K = 4 pair of lines; we read the first line (the one with a speed-up) as without the ensemble and
# the second as with it, because Table 7 (K = 4) repeats the first line's top-1 errors and the text
# says the ensemble lowers SEDONA's error further (to 20.20% for ResNet-152, the second line).
_ENS = ("the K = 4 rows come as two lines with the tick on the first; read as: first line without the ensemble (it has the "
        "speed-up and equals Table 7), second with it (the text: ensembling lowers the error, to 20.20% for ResNet-152)")
_T3 = [  # (arch, method, K, ensemble, top-1, top-5, speed-up or None)
    ("ResNet-101", "Backprop", 1, False, 21.34, 5.86, 1.0), ("ResNet-101", "DGL", 2, False, 21.53, 5.84, 1.42),
    ("ResNet-101", "DGL", 4, False, 23.13, 6.82, 1.92), ("ResNet-101", "DGL", 4, True, 22.35, 6.44, None),
    ("ResNet-101", "SEDONA", 2, False, 20.72, 5.39, 1.67), ("ResNet-101", "SEDONA", 4, False, 21.32, 5.83, 2.01),
    ("ResNet-101", "SEDONA", 4, True, 21.00, 5.52, None),
    ("ResNet-152", "Backprop", 1, False, 21.22, 5.79, 1.0), ("ResNet-152", "DGL", 2, False, 21.45, 5.86, None),
    ("ResNet-152", "DGL", 4, False, 22.89, 6.80, 2.23), ("ResNet-152", "DGL", 4, True, 22.20, 6.39, None),
    ("ResNet-152", "SEDONA", 2, False, 20.69, 5.58, 1.61), ("ResNet-152", "SEDONA", 4, False, 21.09, 5.74, 2.02),
    ("ResNet-152", "SEDONA", 4, True, 20.20, 5.13, None),
]
TABLE3 = []
for _arch, _m, _k, _ens, _t1, _t5, _sp in _T3:
    _row = f"{_arch} {_m} K={_k}" + (" Aux. Ens." if _ens else "")
    _r = _ENS if _k == 4 else ""
    TABLE3 += [_v("Table 3", _row, "Top-1 Err(%)", _t1, reading=_r), _v("Table 3", _row, "Top-5 Err(%)", _t5, reading=_r)]
    if _sp is not None:
        TABLE3.append(_v("Table 3", _row, "Speedup", _sp, unit="x", reading=_r))
# (ResNet-152 DGL K = 2 has no speed-up in the extracted text; Table 15's hours give 158.5 / 104.8 = 1.51.)

# Table 4 (sec. 4.4): CIFAR-10, K = 4, error % mean and spread (the text names neither the kind nor the count).
_T4_READ = "the text gives mean ± spread without saying which: read as one standard deviation over seeds"
_T4 = {"ResNet-101": ((6.59, 0.17), (7.49, 0.51), (7.07, 0.37)), "ResNet-152": ((6.13, 0.11), (7.46, 0.69), (7.22, 0.45))}
TABLE4 = [_v("Table 4", arch, col, m, error=e, error_kind="std", reading=_T4_READ)
          for arch, vals in _T4.items() for col, (m, e) in zip(("SEDONA", "random alpha", "random beta"), vals)]

# Table 5 (appendix C.2): ImageNet in DGL's setting, ResNet-152, K = 2 (Backprop and DGL quoted from DGL).
TABLE5 = [_v("Table 5", "ResNet-152 " + m, col, val) for m, t1, t5 in
          (("Backprop", 25.6, 7.9), ("DGL", 25.5, 8.0), ("SEDONA", 24.95, 7.64))
          for col, val in (("Top-1 Error (%)", t1), ("Top-5 Error (%)", t5))]

# Table 6 (appendix C.3): CIFAR-10, continuous (alpha, beta) against the discretised K = 4.
_T6 = {"VGG-19": (12.31, 12.02, 11.58), "ResNet-50": (7.99, 7.60, 7.53), "ResNet-101": (7.14, 6.77, 6.59),
       "ResNet-152": (6.35, 6.24, 6.13)}
TABLE6 = [_v("Table 6", arch, col, val) for arch, vals in _T6.items()
          for col, val in zip(("Backprop", "SEDONA (Cont.)", "SEDONA (K = 4)"), vals)]

# Table 7 (appendix C.4): ImageNet train and validation errors, K = 4.
_T7 = {"ResNet-101": {"Backprop": (5.24, 21.34), "DGL": (7.60, 23.13), "SEDONA": (7.19, 21.32)},
       "ResNet-152": {"Backprop": (4.11, 21.22), "DGL": (5.56, 22.89), "SEDONA": (4.13, 21.09)}}
TABLE7 = [_v("Table 7", f"{arch} {m}", col, val) for arch, rows in _T7.items() for m, vals in rows.items()
          for col, val in zip(("train error", "val error"), vals)]

# Table 8 (appendix C.5): ablations. Its errors equal Table 2's ResNet-101 rows, so the network is
# ResNet-101 (the table does not say); "-" cells are left out.
_T8_READ = "the table names no network; its Backprop/PredSim/DGL/SEDONA errors are Table 2's ResNet-101 rows"
_T8 = [("SEDONA (K = 4)", 6.59, 40.88, 1, 6, 10.1), ("- extra inner steps", 6.62, 41.04, 1, 2, 1.3),
       ("- weight sampling", 6.76, 42.70, 1, 2, 0.8), ("- pretraining", 6.89, 43.86, None, 2, 1.9),
       ("Backprop", 7.14, 44.50, None, None, None), ("PredSim (K = 4)", 7.93, 46.08, None, None, None),
       ("DGL (K = 4)", 8.30, 46.20, None, None, None)]
TABLE8 = []
for _row, _c10, _tiny, _gp, _gb, _days in _T8:
    TABLE8 += [_v("Table 8", _row, "CIFAR-10", _c10, reading=_T8_READ), _v("Table 8", _row, "Tiny-ImageNet", _tiny, reading=_T8_READ)]
    TABLE8 += [_v("Table 8", _row, col, val, unit=unit) for col, val, unit in
               (("# GPUs Pretraining", _gp, "GPUs"), ("# GPUs Bilevel Opt.", _gb, "GPUs"), ("Search Time (GPU days)", _days, "GPU days"))
               if val is not None]

# Table 14 (appendix F.2): search costs.
_T14 = {"VGG-19": (1, 4, 0.1, 0.5, 2.1), "ResNet-50": (1, 4, 0.2, 0.9, 3.8), "ResNet-101": (1, 6, 0.3, 1.6, 10.1),
        "ResNet-152": (1, 6, 0.5, 2.5, 15.5)}
_T14_COLS = (("# GPUs Pretraining", "GPUs"), ("# GPUs Bilevel Opt.", "GPUs"), ("Pretraining (days)", "days"),
             ("Bilevel Opt. (days)", "days"), ("Total (GPU days)", "GPU days"))
TABLE14 = [_v("Table 14", arch, col, val, unit=unit) for arch, vals in _T14.items() for (col, unit), val in zip(_T14_COLS, vals)]

# Table 15 (appendix F.2): wall-clock training hours on ImageNet.
_T15 = {"ResNet-101": (113.5, 80.2, 59.2, 67.3, 56.5), "ResNet-152": (158.5, 104.8, 71.2, 98.5, 78.3)}
TABLE15 = [_v("Table 15", arch, col, val, unit="h") for arch, vals in _T15.items()
           for col, val in zip(("Backprop", "DGL K = 2", "DGL K = 4", "SEDONA K = 2", "SEDONA K = 4"), vals)]

VALUES: list[PaperValue] = [*TABLE1, *TABLE2, *TABLE3, *TABLE4, *TABLE5, *TABLE6, *TABLE7, *TABLE8, *TABLE14, *TABLE15]

# -- Tables 10-13: the published decouplings ----------------------------------------------------------

# Layers L of each searched network, counted as appendix D.1 does: every residual block (or VGG conv)
# is a layer, and the first conv is part of the first layer.
LAYERS = {"VGG-19": 16, "ResNet-50": 16, "ResNet-101": 33, "ResNet-152": 50}

# (layer index l, 1-based, after which a block ends; its Aux head 1-4), in decreasing softmax(alpha_l)_1.
DECOUPLINGS: dict[str, tuple[tuple[int, int], ...]] = {
    "ResNet-152": tuple(zip((11, 13, 17, 19, 22, 23, 25, 26, 28, 29, 49, 31, 48, 38, 37, 36),
                            (4, 4, 4, 3, 2, 4, 2, 2, 4, 2, 4, 2, 4, 4, 4, 4))),  # Table 10
    "ResNet-101": tuple(zip((7, 11, 12, 22, 25, 27, 28, 29, 19, 32, 31, 30, 26, 24, 23, 20),
                            (4, 4, 4, 4, 4, 4, 4, 4, 4, 3, 2, 4, 4, 4, 4, 4))),  # Table 11
    "ResNet-50": tuple(zip((10, 12, 11, 13, 15, 14, 9, 6, 5, 2, 8, 4, 3, 1, 7),
                           (4, 4, 4, 4, 4, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1))),  # Table 12
    "VGG-19": tuple(zip((6, 13, 14, 15, 12, 11, 8, 9, 7, 10, 4, 5, 2, 1, 3),
                        (4, 1, 1, 1, 1, 2, 1, 4, 1, 4, 1, 1, 1, 1, 1))),  # Table 13
}


def published_decoupling(arch: str, components: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """SEDONA's discretisation (sec. 3.4) of the published ranking: the K-1 layers with the highest
    softmax(alpha)_1 end blocks, each with its Aux head.

    Returns (cuts, heads) in interlock's terms: ``cuts`` the 0-based indices of the layers where
    components 2..K start (a block ending after 1-based layer l makes the next start at index l),
    increasing; ``heads`` the head of each component 1..K-1 ("aux1".."aux4"), in the same order.
    """
    if arch not in DECOUPLINGS:
        raise ValueError(f"published_decoupling: arch={arch!r}; the paper publishes {', '.join(DECOUPLINGS)}")
    ranked = DECOUPLINGS[arch]
    count(components, f"published_decoupling({arch!r}): components={components!r}; the paper ranks {len(ranked)} "
          f"layers, so use K from 2 to {len(ranked) + 1}", minimum=2, maximum=len(ranked) + 1)
    chosen = sorted(ranked[:components - 1])
    return tuple(l for l, _ in chosen), tuple(f"aux{h}" for _, h in chosen)


def _c(about: str, where: str, claim: str) -> PaperClaim:
    return PaperClaim(_P, about, where, claim)


CLAIMS: list[PaperClaim] = [
    _c("Table 1", "sec. 4.1; Table 1 caption", "Each of Aux 1-4 has far fewer parameters and FLOPs than MLP-SR and PredSim."),
    _c("Table 2", "sec. 4.2", "DGL and PredSim are worse than backprop in almost every case."),
    _c("Table 2", "sec. 4.2", "PredSim degrades most on Tiny-ImageNet."),
    _c("Table 2", "sec. 4.2", "SEDONA's decoupling makes greedy block-wise learning beat end-to-end backprop."),
    _c("Table 2", "sec. 4.2", "On Tiny-ImageNet SEDONA beats backprop by a wide margin."),
    _c("Fig. 3", "sec. 4.2", "Errors grow with K; DGL and PredSim fall well behind backprop from K = 12, SEDONA stays better "
       "than or close to backprop up to K = 16."),
    _c("Table 3", "sec. 4.3", "On ImageNet SEDONA edges out backprop with up to about a 2x speed-up, unlike DGL."),
    _c("Table 3", "sec. 4.3", "Ensembling the last two blocks' heads widens SEDONA's lead over backprop (20.20% top-1)."),
    _c("Table 3", "sec. 4.3", "DGL's uniform split gives the largest speed-up (2.23x) but costs accuracy."),
    _c("Table 4", "sec. 4.4", "Replacing the learned alpha by random values hurts more than replacing beta: how to split "
       "matters most."),
    _c("Fig. 4", "sec. 4.4", "softmax(alpha)_1 is far more confident (near 0 or 1) at lower layers than at upper ones."),
    _c("Fig. 4", "sec. 4.4; Fig. 4 caption", "softmax(alpha)_1 is smallest over the first few layers, so the first block is "
       "not shallow; it is large and rather flat at upper layers."),
    _c("Fig. 4", "appendix C.3", "At upper layers softmax(alpha)_1 is close to 0.5."),
    _c("Fig. 5", "sec. 4.4", "Lower layers prefer the deepest head, Aux 4; upper layers pick various heads."),
    _c("Fig. 6", "appendix A", "Over 30 random K = 4 configurations of VGG-19 the error varies by up to 6.01 points."),
    _c("Fig. 7", "appendix C.1", "Features Replay degrades more than the greedy methods when K >= 12."),
    _c("Table 5", "appendix C.2", "In DGL's ImageNet setting SEDONA's errors are lower than backprop's and DGL's."),
    _c("Table 6", "appendix C.3", "The continuous (alpha, beta) and the discretised K = 4 give similar errors: the "
       "discretisation gap is small."),
    _c("Table 7", "appendix C.4", "SEDONA's validation error is below backprop's while DGL's is not."),
    _c("Table 7", "appendix C.4", "The text says DGL's and SEDONA's training errors are below backprop's; the table's "
       "numbers show them above (7.60 and 7.19 against 5.24 for ResNet-101)."),
    _c("Fig. 8", "appendix C.4", "SEDONA's gradients align better with backprop's than DGL's at every interval."),
    _c("Table 8", "appendix C.5", "Each of extra inner steps, weight sampling and pretraining improves accuracy; without the "
       "first two SEDONA still beats backprop at 0.8 GPU days of search."),
    _c("Table 14", "appendix F.2", "The search takes 2.1 to 15.5 GPU days, growing with the network."),
    _c("Table 15", "sec. 4.3; appendix F.2", "Greedy training with K blocks on K GPUs takes fewer hours than backprop."),
]
