"""PTB-XL and CinC (WFDB + SNOMED CT) readers, labels, folds, standardization, cache and download."""

from edge_ecg.data.cinc import EXTERNAL_FOLD, CincDataset, load_cinc
from edge_ecg.data.download import download_ptbxl
from edge_ecg.data.formats import FORMATS, detect_format, load_dataset
from edge_ecg.data.ptbxl import LEADS, RATES, DataError, PtbxlDataset, RecordIssue, load_ptbxl
from edge_ecg.data.split import TEST_FOLD, VAL_FOLD, Split, Standardizer, split_folds

__all__ = [
    "EXTERNAL_FOLD",
    "FORMATS",
    "CincDataset",
    "detect_format",
    "load_cinc",
    "load_dataset",
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
