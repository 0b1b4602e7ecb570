"""Data: embedded sample photos, dataset classes, the public-dataset catalog and safe downloads.

Names resolve lazily so that `import savl.data` (e.g. for `savl data list`) stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "sample_images": "samples",
    "sample_image_info": "samples",
    "HRPatchDataset": "datasets",
    "PairedFolderDataset": "datasets",
    "LRFolderDataset": "datasets",
    "FrozenValidationSet": "datasets",
    "degrade_batch": "datasets",
    "HRFileDataset": "hr_files",
    "training_files": "hr_files",
    "find_images": "hr_files",
    "data_roots": "hr_files",
    "read_meta_info": "hr_files",
    "write_meta_info": "hr_files",
    "prepare_paper_data": "prepare",
    "make_multiscale": "prepare",
    "make_subimages": "prepare",
    "DatasetEntry": "catalog",
    "load_catalog": "catalog",
    "verify": "catalog",
    "data_root": "catalog",
    "list_datasets": "catalog",
    "download_dataset": "catalog",
    "verify_dataset": "catalog",
    "fetch": "download",
    "extract": "download",
    "sha256_file": "download",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"savl.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'savl.data' has no attribute {name!r}")


def __dir__():
    return __all__
