"""Datasets: labels CSV, image folders (LFW layout), LFW pairs/gender lists, CelebA metadata.

Importing this package registers the ``folder`` and ``lfw`` dataset components.
"""

from facepriv.datasets.celeba import celeba_labels, read_celeba_attributes, read_celeba_identities
from facepriv.datasets.folder import FolderDataset, Sample, dataset_labels, folder_identity, folder_labels
from facepriv.datasets.labels import Labels, check_images_exist, read_labels_csv, write_labels_csv
from facepriv.datasets.lfw import (
    LfwDataset,
    LfwGender,
    LfwPair,
    lfw_image_path,
    read_lfw_gender,
    read_lfw_pairs,
)

__all__ = [
    "FolderDataset", "Labels", "LfwDataset", "LfwGender", "LfwPair", "Sample", "celeba_labels",
    "check_images_exist", "dataset_labels", "folder_identity", "folder_labels", "lfw_image_path",
    "read_celeba_attributes", "read_celeba_identities", "read_labels_csv", "read_lfw_gender",
    "read_lfw_pairs", "write_labels_csv",
]
