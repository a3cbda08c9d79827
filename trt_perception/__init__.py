"""trt_perception: camera frames -> TensorRT / ONNX Runtime models -> detections and drive commands.

The pipeline (everything below ``node.py``) is plain Python + numpy + OpenCV and knows nothing of ROS;
``rclpy``, ``tensorrt`` and CUDA bindings are imported lazily inside thin adapters only.
"""

__version__ = "0.1.0"
