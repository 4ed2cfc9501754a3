"""Datalists for every supported layout, npz/h5 readers, dataset presets, data checks and the synthetic phantom."""

from mgrad.data.acdc import acdc_datalist, acdc_h5_datalist, split_patients
from mgrad.data.classes import ACDC_CLASSES, BTCV_TO_SYNAPSE, SYNAPSE_CLASSES
from mgrad.data.datalist import SPLITS, decathlon_datalist, synthetic_datalist
from mgrad.data.datasets import DATASETS, DatasetSpec, dataset_info, get_datalist
from mgrad.data.dicom import DicomSeriesReader
from mgrad.data.errors import DataError, MissingSplitError
from mgrad.data.readers import FileTypeReader, H5Reader, NpzReader, image_readers
from mgrad.data.slice_dataset import SliceDataset, training_dataset
from mgrad.data.synapse import SYNAPSE_TEST_CASES, SYNAPSE_TRAIN_CASES, synapse_datalist, synapse_transunet_datalist
from mgrad.data.synthetic import make_dataset
from mgrad.data.volumes import VOLUME_SUFFIXES, volume_datalist

__all__ = [
    "ACDC_CLASSES",
    "BTCV_TO_SYNAPSE",
    "DATASETS",
    "SPLITS",
    "SYNAPSE_CLASSES",
    "SYNAPSE_TEST_CASES",
    "SYNAPSE_TRAIN_CASES",
    "DataError",
    "DatasetSpec",
    "DicomSeriesReader",
    "FileTypeReader",
    "H5Reader",
    "MissingSplitError",
    "NpzReader",
    "SliceDataset",
    "acdc_datalist",
    "acdc_h5_datalist",
    "dataset_info",
    "decathlon_datalist",
    "get_datalist",
    "image_readers",
    "make_dataset",
    "split_patients",
    "synapse_datalist",
    "synapse_transunet_datalist",
    "synthetic_datalist",
    "training_dataset",
    "volume_datalist",
    "VOLUME_SUFFIXES",
]
