"""headgan_demo TFDS builder (see headgan_demo_dataset_builder.py)."""
