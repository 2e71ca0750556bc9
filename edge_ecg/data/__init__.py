"""PTB-XL: reading, labels, folds, standardization, cache and download."""

from edge_ecg.data.download import download_ptbxl
from edge_ecg.data.ptbxl import LEADS, RATES, DataError, PtbxlDataset, RecordIssue, load_ptbxl
from edge_ecg.data.split import TEST_FOLD, VAL_FOLD, Split, Standardizer, split_folds

__all__ = [
    "LEADS",
    "RATES",
    "TEST_FOLD",
    "VAL_FOLD",
    "DataError",
    "PtbxlDataset",
    "RecordIssue",
    "Split",
    "Standardizer",
    "download_ptbxl",
    "load_ptbxl",
    "split_folds",
]
