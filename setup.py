"""ament_python package that also installs with plain pip (no ROS needed for the pipeline)."""
from glob import glob

from setuptools import find_packages, setup

package_name = "trt_perception"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "benchmarks"]),
    package_data={package_name: ["data/demo/*", "data/demo/*/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.8",
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "pyyaml",
        "onnx",
        "onnxruntime",
        "rosbags>=0.9.20",
        "tqdm",
        "matplotlib>=3.4",  # replay/demo report plots (Axes.stairs: 3.4): people look at pictures, not numbers
    ],
    extras_require={
        # A Jetson gets TensorRT and pycuda from JetPack; these extras are for desktops.
        "tensorrt": ["tensorrt"],
        "cuda": ["cuda-python"],
        "pycuda": ["pycuda"],
        "surgery": ["onnx-graphsurgeon"],
        "convert": ["tf2onnx", "onnx-graphsurgeon"],
        "report": ["matplotlib"],
        # COCO mAP and MOTA/IDF1 in replay reports (wheels for x86-64 and aarch64, Python 3.8+)
        "eval": ["faster-coco-eval", "motmetrics>=1.4.0"],
        "tracking": ["lapx>=0.5.13"],
        "ray": ["ray>=2.0"],  # evaluate --ray ADDRESS (optional, heavy)  # the tracker's linear assignment (lapjv)
        "test": [
            "pytest", "ruff", "vermin", "onnx-graphsurgeon", "matplotlib", "faster-coco-eval", "motmetrics>=1.4.0",
            "lapx>=0.5.13",
        ],
    },
    zip_safe=True,
    maintainer="trt_perception maintainers",
    maintainer_email="maintainers@trt-perception.invalid",
    description="TensorRT / ONNX Runtime perception for small cars on ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "trt-perception = trt_perception.cli:main",
            "perception = trt_perception.node:main",
        ],
    },
)
