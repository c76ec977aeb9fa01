from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="noisegrad",
    version="0.1.0",
    description="Noise smoothing (SmoothGrad, SmoothGrad², VarGrad) for any Captum attribution: exact, reproducible, streaming.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["noisegrad", "noisegrad.*"]),
    package_data={"noisegrad.app": ["data/*.pt"]},  # the demo CNN's weights (scripts/train_demo_model.py)
    python_requires=">=3.10",
    # Floors tested by scripts/test_floors.sh (run by .ci/run): the suite with exactly these versions.
    install_requires=["torch>=2.13.0", "captum>=0.8.0", "numpy>=1.23.2", "matplotlib>=3.6.0", "tqdm>=4.64.0"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "nbclient>=0.7", "nbformat>=5.7", "ipykernel>=6", "transformers>=4.40",
                 "safetensors>=0.4", "tensorboard>=2.10", "lightning>=2.0"],
        # the training monitor's destinations (noisegrad.AttributionMonitor, noisegrad.AttributionMonitorCallback)
        "tensorboard": ["tensorboard>=2.10"],
        "lightning": ["lightning>=2.0"],
    },
    license="BSD-3-Clause",
)
