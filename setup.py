"""Installs the hyperrec code under one `hyperrec` import namespace and the `hyperrec` command.

The top-level folders stay where the data flow puts them (pipeline/, components/, data/,
serving/); `package_dir` installs each as `hyperrec.<folder>`, so no generic name such as
`pipeline` or `serving` lands in site-packages next to other projects' modules.
Pinned versions live in requirements.lock (the one lock file); install_requires only names
what the code imports so that `pip install -e .` never fights the lock.
"""
from setuptools import find_packages, setup

FOLDERS = ("pipeline", "components", "data", "schemas", "serving")
PACKAGES = [f"hyperrec.{folder}" for folder in FOLDERS] + [
    f"hyperrec.{folder}.{sub}" for folder in FOLDERS for sub in find_packages(where=folder)]

setup(
    name="hyperrec",
    version="0.1.0",
    description="End-to-end TFX pipeline for a multimodal hyper-personalisation recommender",
    python_requires=">=3.10,<3.11",
    packages=PACKAGES,
    package_dir={f"hyperrec.{folder}": folder for folder in FOLDERS},
    package_data={"": ["*.pbtxt", "*.config", "*.json", "*.yaml", "*.yml", "*.txt", "*.md"]},
    install_requires=["tfx[kfp]==1.16.0", "click", "rich", "pillow"],
    entry_points={"console_scripts": ["hyperrec=hyperrec.pipeline.cli:main"]},
)
