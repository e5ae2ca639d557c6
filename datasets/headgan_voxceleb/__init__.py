"""headgan_voxceleb TFDS builder (see headgan_voxceleb_dataset_builder.py)."""
