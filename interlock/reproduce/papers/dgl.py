"""The numbers and claims of Belilovsky et al. 2020 (DGL), each with its table, row and column.

Every cell of Tables 1-4 as the extracted text gives it, in the paper's units (accuracy %,
relative FLOPs %, GFLOPs). Figures 2-6 carry no numbers in the text: only their claims are
recorded, paraphrased, each cited by the section that makes it.
"""

from __future__ import annotations

from .records import PaperClaim, PaperValue

_P = "dgl"


def _v(table: str, row: str, column: str, value: float, **kw) -> PaperValue:
    return PaperValue(_P, table, row, column, value, **kw)


# Table 1 (sec. 4.1): the three auxiliary heads on the 6-layer CNN, CIFAR-10. The caption says the
# FLOPs are those of the auxiliary net relative to the largest module of the primary network.
_T1 = [("CNN-aux", 200.0, 92.2), ("MLP-aux", 0.7, 90.6), ("MLP-SR-aux", 4.0, 91.2)]
TABLE1 = [_v("Table 1", head, "Relative FLOPS", flops) for head, flops, _ in _T1] + [
    _v("Table 1", head, "Acc.", acc) for head, _, acc in _T1]

# Table 2 (sec. 4.1, "Comparison to DDG"): ResNet-110 cut into K = 2 on CIFAR-10. Backprop and
# DDG are quoted from Huo et al. 2018b; DGL is over 3 trials.
TABLE2 = [
    _v("Table 2", "ResNet-110 (K = 2)", "Backprop", 93.53),
    _v("Table 2", "ResNet-110 (K = 2)", "DDG", 93.41),
    _v("Table 2", "ResNet-110 (K = 2)", "DGL", 93.5, error=0.1, error_kind="std", seeds=3,
       reading="the caption says the 3 trials give the variance, not which error bar 0.1 is: read as one standard deviation"),
]

# Table 3 (sec. 4.2): ImageNet, the shortened schedule of Xiao et al. 2019.
_T3 = [("VGG-13 (DGL per Layer, K = 10)", 64.4, 85.8), ("VGG-13 (DGL K = 4)", 67.8, 88.0), ("VGG-13 (backprop)", 66.6, 87.5),
       ("VGG-19 (DGL K = 4)", 69.2, 89.0), ("VGG-19 (DGL K = 2)", 70.8, 90.2), ("VGG-19 (backprop)", 69.7, 89.7),
       ("ResNet-152 (DGL K = 2)", 74.5, 92.0), ("ResNet-152 (backprop)", 74.4, 92.1)]
TABLE3 = [_v("Table 3", row, col, val) for row, t1, t5 in _T3 for col, val in (("Top-1", t1), ("Top-5", t5))]

# Table 4 (appendix C.1): FLOPs of the network and of its auxiliary nets on ImageNet.
_T4 = [("VGG-13 (K = 4)", 13.0, 0.2), ("VGG-19 (K = 4)", 20.0, 0.2), ("ResNet-152 (K = 2)", 11.0, 0.02)]
TABLE4 = [_v("Table 4", row, col, val, unit="GFLOPs") for row, net, aux in _T4
          for col, val in (("Flops Net", net), ("Flops Aux", aux))]

VALUES: list[PaperValue] = [*TABLE1, *TABLE2, *TABLE3, *TABLE4]


def _c(about: str, where: str, claim: str) -> PaperClaim:
    return PaperClaim(_P, about, where, claim)


CLAIMS: list[PaperClaim] = [
    # Table 1
    _c("Table 1", "Table 1 caption", "CNN-aux, the head of earlier work, is expensive next to the module it trains "
       "(twice the FLOPs of the largest module)."),
    _c("Table 1", "Table 1 caption; sec. 4.1", "MLP-aux and MLP-SR-aux, which average spatially first, cost a small "
       "fraction of CNN-aux's FLOPs for a small loss of accuracy against it."),
    _c("Table 1", "sec. 4.1", "Both spatial-averaging heads stay under 5% of the FLOPs of the primary network."),
    # Table 2
    _c("Table 2", "sec. 4.1, Comparison to DDG", "With ResNet-110 cut in two, DGL (MLP-SR-aux heads) matches the "
       "accuracy of backprop and of DDG."),
    _c("Table 2", "sec. 4.1, Comparison to DDG", "The MLP-SR-aux head costs under 0.1% of the primary network's FLOPs."),
    # Table 3
    _c("Table 3", "sec. 4.2", "On ImageNet DGL does as well as end-to-end training, sometimes better, for every model."),
    _c("Table 3", "sec. 4.2", "Layer-by-layer VGG-13 (K = 10) loses a little accuracy, surprisingly little without "
       "any backward communication."),
    # Table 4
    _c("Table 4", "sec. 4.2; appendix C.1", "The auxiliary networks are negligible next to the network."),
    # Figures
    _c("Fig. 2", "sec. 4.1, Comparison to DNI", "DGL beats DNI and cDNI in test accuracy and training loss, generalises "
       "better than backprop and reaches a close final training loss."),
    _c("Fig. 3", "sec. 4.1, Sequential vs. Parallel", "At layer 4 DGL catches up quickly with sequential greedy training "
       "(each layer trained for 50 epochs before the next) and appears to generalise better at times."),
    _c("Fig. 3", "sec. 4.1, Sequential vs. Parallel", "Layer 1 is the same under both, since its input never changes."),
    _c("Fig. 4", "sec. 4.1", "After a few epochs the layers improve progressively with depth."),
    _c("Fig. 5", "sec. 4.3", "With S = 1.0 and a uniform pmf async DGL keeps the synchronous accuracy."),
    _c("Fig. 5", "sec. 4.3", "Accuracy is kept up to about S = 1.2; beyond it the loss against synchronous DGL stays small "
       "(the caption: negligible even at substantial delays)."),
    _c("Fig. 6", "sec. 4.3; Fig. 6 caption", "At S = 1.2 even a tiny buffer costs only a slight loss of accuracy: smaller "
       "buffers lose little."),
]
