"""Installs the hyperrec packages and the `hyperrec` command.

Pinned versions live in requirements.lock (the one lock file); install_requires only names
what the code imports so that `pip install -e .` never fights the lock.
"""
from setuptools import find_packages, setup

setup(
    name="hyperrec",
    version="0.1.0",
    description="End-to-end TFX pipeline for a multimodal hyper-personalisation recommender",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*",
                                    "serving", "serving.*"]),
    package_data={"": ["*.pbtxt", "*.config", "*.json", "*.yaml", "*.yml", "*.txt", "*.md"]},
    install_requires=["tfx[kfp]==1.16.0", "click", "rich", "pillow"],
    entry_points={"console_scripts": ["hyperrec=pipeline.cli:main"]},
)
