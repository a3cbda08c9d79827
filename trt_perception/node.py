"""The ROS 2 node: camera in, detections and drive commands out. Wiring only.

The node owns subscriptions, publishers, parameters, timers and the worker thread; every per-frame decision
is ``FrameProcessor``'s (the pipeline plus the pilot's safety), which the replay tool runs too. rclpy and the
message packages are imported only inside ``main`` and ``PerceptionNode``, so this module imports without ROS.

    ros2 run trt_perception perception --ros-args --params-file config/car.yaml
    ros2 launch trt_perception car.launch.py
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any, Dict, List, Optional

from trt_perception.config import CameraConfig, PerceptionConfig
from trt_perception.errors import ConfigError, ImageError, TrtPerceptionError
from trt_perception.heads import create_camera_processors
from trt_perception.mailbox import Handover, RoundRobinMailboxes
from trt_perception.messages import (
    MessageTypes,
    copy_header,
    diagnostic_array,
    make_header,
    overlay_image,
    stamp_seconds,
)
from trt_perception.params import (
    BOOL,
    DOUBLE,
    INT,
    NODE_NAME,
    STRING_LIST,
    ParamTable,
    check_value,
    head_values,
    is_ros_param,
    resolve_heads,
    validate_param_change,
)
from trt_perception.pipeline import finish_batch
from trt_perception.results import DriveCommand
from trt_perception.safety import REASON_DISABLED, REASON_NONFINITE, REASON_SHUTDOWN, REASON_STALE_INPUT
from trt_perception.stats import RollingStats

WATCHDOG_PERIOD = 0.05  # seconds between watchdog checks (ROS clock)
WORKER_POLL = 0.2  # seconds the worker waits for a frame before checking for shutdown
STALE_STAMP_S = 60.0  # a "latency" above this is a clock mismatch, reported as such in /diagnostics
_OVERLAY_ENCODING = {"rgb": "rgb8", "bgr": "bgr8"}


class CameraInput:
    """One camera: its subscription, its FrameProcessor (decoder + the heads that run on it, models shared with
    the other cameras), its latest-frame slot, statistics and publishers. ``name`` is '' for image_topic's."""

    def __init__(self, config: CameraConfig, processor: Any, index: int) -> None:
        self.index = index  # its slot in the node's RoundRobinMailboxes
        self.name = config.name
        self.topic = config.topic
        self.transport = config.transport
        self.processor = processor
        self.stats = RollingStats(window=5.0, samples=300)
        self.publishers: Dict[Any, Any] = {}  # (head, role) -> publisher
        self.topic_names: List[str] = []
        self.overlay_buffers: Dict[str, Any] = {}
        self.last_outputs: Dict[str, Any] = {}
        self.last_frame_id = ""
        self.subscription: Any = None
        self.reported = {"errors": 0.0, "bad_frames": 0.0}

    @property
    def resolved_topic(self) -> str:
        """The resolved camera topic (namespace and remapping applied) for log lines."""
        return str(getattr(self.subscription, "topic_name", self.topic))

    def label(self) -> str:
        return f"camera {self.name} " if self.name else ""


class PerceptionNode:
    """Wraps an rclpy ``Node`` (composition keeps rclpy out of module import).

    Construction raises ``TrtPerceptionError`` (ConfigError, SpecError, BackendError...) for anything a user
    can fix: ``main`` logs it as one line and exits 1. One worker thread serves every camera's latest-frame
    slot in turn (round robin: no camera starves), so the models (one engine, one CUDA context) run one frame
    at a time.
    """

    def __init__(self, node: Any) -> None:
        from rcl_interfaces.msg import SetParametersResult
        from rclpy.parameter import Parameter

        self.node = node
        self.logger = node.get_logger()
        self._Parameter = Parameter
        self._SetParametersResult = SetParametersResult
        self.cameras: List[CameraInput] = []
        self._worker: Optional[threading.Thread] = None
        self._decoder: Optional[threading.Thread] = None  # overlap: the decode stage's thread
        self._handover: Optional[Handover] = None  # overlap: one decoded frame between the two stages
        self._lock = threading.Lock()  # pending head settings
        self._pending: Dict[str, Dict[str, Any]] = {}  # head -> its new param values, applied between frames
        self._nonfinite_reported = 0
        self._input_stops_reported = 0
        self.input_subscriptions: List[Any] = []

        self._log_handler = _RosLogHandler(self.logger)  # the package's Python log lines (gpu_decode's choice,
        package_logger = logging.getLogger("trt_perception")  # TensorRT's) into the ROS log
        package_logger.addHandler(self._log_handler)
        if package_logger.level == logging.NOTSET:
            package_logger.setLevel(logging.INFO)
        try:
            self._start(node)
        except BaseException:  # the node will not run: leave the package logger as it was
            package_logger.removeHandler(self._log_handler)
            raise
        self.logger.info(self._startup_line())

    def _start(self, node: Any) -> None:
        """Params, models, interfaces and threads; raises the package's errors for anything a user can fix."""
        self.table = self._check_overrides()
        self._values = self._declare_parameters(self.table)
        self.config = PerceptionConfig.from_params(self._values)
        self.types = MessageTypes.from_rclpy()
        processors = create_camera_processors(self.config, clock=self.now)
        self.cameras = [CameraInput(c, processors[c.name], i) for i, c in enumerate(self.config.camera_inputs)]
        self.slots: RoundRobinMailboxes = RoundRobinMailboxes(len(self.cameras))
        # several cameras sharing a model with a batch dimension: frames ready together run as one batch
        self._batching = len(self.cameras) > 1 and any(c.processor.can_batch for c in self.cameras)
        self.heads = [h for camera in self.cameras for h in camera.processor.heads if h.owns_pipeline]
        drivers = [(c, c.processor.drive_head) for c in self.cameras if c.processor.drive_head is not None]
        self.drive_camera, self.drive_head = drivers[0] if drivers else (None, None)
        self.safety = self.drive_head.task.safety if self.drive_head is not None else None
        try:
            self._require_messages()
            self._create_interfaces()
        except BaseException:
            self._close_processors()
            raise
        node.add_on_set_parameters_callback(self._on_set_parameters)
        if self.config.frame_policy == "latest":
            # two stages: decode the next frame while the models run on this one; raw frames decode to a view
            # (nothing to overlap: the hand-over cost 3% in benchmarks/bench_overlap.py), so only compressed
            if self.config.overlap and any(c.transport == "compressed" for c in self.cameras):
                self._handover = Handover()
                self._decoder = threading.Thread(
                    target=self._decode_loop, name="trt_perception_decode", daemon=True
                )
                self._decoder.start()
            self._worker = threading.Thread(
                target=self._worker_loop, name="trt_perception_worker", daemon=True
            )
            self._worker.start()

    # --------------------------------------------------------------------------------------- parameters

    def _check_overrides(self) -> ParamTable:
        """The parameter table for the heads the params file / command line asks for; unknown or ill-typed
        params are refused before anything is declared.

        ROS would silently ignore a misspelled name (a typo in pilot.max_throttle must not pass) and refuse a
        wrong type with a generic message; here each gets the parameter name, the value and the fix.
        """
        overrides = getattr(self.node, "_parameter_overrides", {}) or {}
        given = {name: p.value for name, p in overrides.items() if not is_ros_param(name)}
        if given.get("heads") is not None:
            given["heads"] = list(given["heads"])
        base = None
        if given.get("params_file"):
            from pathlib import Path

            base = Path(str(given["params_file"])).parent
        table = resolve_heads(given, base)
        for name, value in given.items():
            param = table.by_name.get(name)
            if param is None:
                raise ConfigError(table.unknown(name))
            _, reason = check_value(param, value, strict_double=True)
            if reason:
                fix = "" if "fix:" in reason else "; fix: correct it in the params file"
                raise ConfigError(reason + fix)
        return table

    def _declare_parameters(self, table: ParamTable) -> Dict[str, Any]:
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

        values: Dict[str, Any] = {}
        for param in table.params:
            descriptor = ParameterDescriptor(description=param.description, read_only=param.read_only)
            constraints = param.describe_range() if (param.range or param.choices) else ""
            if param.dynamic:
                constraints = (constraints + "; " if constraints else "") + "changeable at run time"
            descriptor.additional_constraints = constraints
            if param.type == STRING_LIST or "off" in param.choices:
                # rclpy would type an empty default list as byte[]; a bare off/on in YAML arrives as a bool
                descriptor.dynamic_typing = True
            elif param.range is not None:
                lo, hi = param.range
                if param.special is not None:
                    lo, hi = min(lo, param.special), max(hi, param.special)
                if param.type == DOUBLE:
                    descriptor.floating_point_range = [
                        FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)
                    ]
                elif param.type == INT:
                    descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
            default = list(param.default) if isinstance(param.default, list) else param.default
            declared = self.node.declare_parameter(param.name, default, descriptor)
            value = declared.value
            if param.type == STRING_LIST and value is None:
                value = []
            if param.type == BOOL and value is None:
                value = bool(param.default)
            if isinstance(value, bool) and param.type != BOOL:
                value, _ = check_value(param, value)  # gpu_decode: off (a YAML boolean) -> 'off'
            if value is None:  # a dynamically typed param left unset
                value = param.default
            values[param.name] = list(value) if param.type == STRING_LIST else value
        return values

    def _on_set_parameters(self, params: List[Any]) -> Any:
        """Validate a batch of changes (all or nothing), then apply them; a refusal says why."""
        current = dict(self._values)
        changed: Dict[str, Any] = {}
        by_name = self.table.by_name
        for parameter in params:
            name = parameter.name
            if name not in by_name:
                continue  # ROS' own (use_sim_time, qos_overrides...)
            reason = validate_param_change(name, parameter.value, current, self.table)
            if reason is None:
                value, _ = check_value(by_name[name], parameter.value)
                current[name] = value
                changed[name] = value
                head = self._head_of(name)
                if head is not None:
                    reason = head.task.check_change(head_values(current, head.name))
            if reason is not None:
                self.logger.warning(f"refused: {reason}")
                return self._SetParametersResult(successful=False, reason=reason)
        if changed:
            self._values = current
            self._apply(changed)
        return self._SetParametersResult(successful=True)

    def _head_of(self, name: str) -> Optional[Any]:
        """The head a parameter belongs to (its first camera's copy when it runs on several)."""
        prefix = name.split(".", 1)[0]
        for head in self.heads:
            if head.name == prefix:
                return head
        return None

    def _copies(self, head_name: str) -> List[Any]:
        """Every camera's copy of a head (one per camera it runs on)."""
        return [h for camera in self.cameras for h in camera.processor.heads if h.name == head_name]

    def _apply(self, changed: Dict[str, Any]) -> None:
        """Changed heads get their new values between frames; the driving head at once (its limits and the
        enable switch must act now, and PilotSafety is thread-safe)."""
        for head in {h for h in (self._head_of(n) for n in changed) if h is not None}:
            values = head_values(self._values, head.name)
            if head.name == getattr(self.drive_head, "name", None):
                head = self.drive_head
                head.task.apply(values)
                if f"{head.name}.drive_enabled" in changed:
                    flag = bool(values["drive_enabled"])
                    stop = head.task.set_enabled(flag, self.now())
                    if stop is not None:
                        self._publish_command(stop, self._stamp_now(), force=True)
                    self.logger.info("drive enabled" if flag else "drive disabled: stop published")
            else:
                with self._lock:
                    self._pending[head.name] = values
        self.logger.info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changed.items()))

    # ------------------------------------------------------------------------------------- interfaces

    def _require_messages(self) -> None:
        types, config = self.types, self.config
        for camera in self.cameras:
            image_type = "CompressedImage" if camera.transport == "compressed" else "Image"
            types.require("Header", image_type, param="image_transport")
        for head in self.heads:
            needed = {t.type for t in head.task.topics(config.topic_prefix(head.name))}
            needed.update(kind for _, kind in head.task.accepts_topics())
            types.require(*sorted(needed), param=f"{head.name} ({head.task.name} head)")
        if config.diagnostics_period > 0:
            types.require("DiagnosticArray", param="diagnostics_period")

    def _create_interfaces(self) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        try:
            from rclpy.event_handler import PublisherEventCallbacks
        except ImportError:  # Humble
            from rclpy.qos_event import PublisherEventCallbacks

        node, config, types = self.node, self.config, self.types
        reliability = (
            ReliabilityPolicy.BEST_EFFORT
            if config.qos_reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE
        )
        camera_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=config.qos_depth,
            reliability=reliability,
            durability=DurabilityPolicy.VOLATILE,
        )
        output_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
        )
        overlay_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE
        )
        publisher_events = PublisherEventCallbacks(incompatible_qos=self._on_incompatible_publisher)
        self.command_pub = self.diagnostics_pub = None
        for camera in self.cameras:
            self._subscribe(camera, camera_qos)
            for head in camera.processor.heads:
                for topic in head.task.topics(config.topic_prefix(head.name, camera.name)):
                    publisher = node.create_publisher(
                        getattr(types, topic.type),
                        topic.name,
                        overlay_qos if topic.overlay else output_qos,
                        event_callbacks=publisher_events,
                    )
                    camera.publishers[(head.name, topic.role)] = publisher
                    camera.topic_names.append(topic.name)
        self._subscribe_inputs()
        if self.drive_head is not None:
            self.command_pub = self.drive_camera.publishers[(self.drive_head.name, "command")]
            self.watchdog_timer = node.create_timer(WATCHDOG_PERIOD, self._on_watchdog)
        from std_srvs.srv import SetBool

        self.enable_service = node.create_service(SetBool, "~/set_enabled", self._on_set_enabled)
        if config.diagnostics_period > 0:
            self.diagnostics_pub = node.create_publisher(types.DiagnosticArray, "/diagnostics", output_qos)
            self.diagnostics_timer = node.create_timer(config.diagnostics_period, self._on_diagnostics)

    def _subscribe(self, camera: CameraInput, qos: Any) -> None:
        try:
            from rclpy.event_handler import SubscriptionEventCallbacks
        except ImportError:  # Humble
            from rclpy.qos_event import SubscriptionEventCallbacks

        types = self.types
        image_type = types.CompressedImage if camera.transport == "compressed" else types.Image
        try:  # Jazzy also reports a publisher of another type on the topic (Image vs CompressedImage)
            events = SubscriptionEventCallbacks(
                incompatible_qos=lambda event, c=camera: self._on_incompatible_subscription(c, event),
                incompatible_type=lambda event, c=camera: self._on_incompatible_type(c, event),
            )
        except TypeError:  # Humble
            events = SubscriptionEventCallbacks(
                incompatible_qos=lambda event, c=camera: self._on_incompatible_subscription(c, event)
            )
        camera.subscription = self.node.create_subscription(
            image_type, camera.topic, lambda msg, c=camera: self._on_image(c, msg), qos, event_callbacks=events
        )
        transport_param = f"camera.{camera.name}.transport" if camera.name else "image_transport"
        topic_param = f"camera.{camera.name}.topic" if camera.name else "image_topic"
        compressed_topic = camera.topic.rstrip("/").endswith("/compressed")
        if (camera.transport == "compressed") != compressed_topic:
            self.logger.warning(
                f"{transport_param} is '{camera.transport}' but {topic_param} is {camera.topic!r}: "
                "the compressed topic is <camera topic>/compressed (CompressedImage), the raw one has no suffix "
                f"(Image); fix: make {topic_param} and {transport_param} agree"
            )

    def _subscribe_inputs(self) -> None:
        """Topics heads read besides the camera (a pilot's IMU, its behavior): each message goes to the task as
        it arrives. IMU streams are sensor data (best effort, latest only); a behavior is a rare, reliable command
        whose last value must not be missed."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for camera in self.cameras:
            for head in camera.processor.heads:
                for topic, kind in head.task.accepts_topics():
                    qos = qos_profile_sensor_data if kind == "Imu" else reliable
                    self.input_subscriptions.append(
                        self.node.create_subscription(
                            getattr(self.types, kind), topic,
                            lambda msg, h=head, t=topic: h.task.on_message(t, msg, self.now()), qos,
                        )
                    )
                    self.logger.info(f"{head.name} reads {kind} from {self._resolved(topic)}")

    @property
    def camera_topic(self) -> str:
        """The (first) camera's resolved topic, for log lines."""
        return self.cameras[0].resolved_topic if self.cameras else self.config.image_topic

    def _on_incompatible_subscription(self, camera: CameraInput, event: Any) -> None:
        policy = getattr(
            getattr(event, "last_policy_kind", None), "name", str(getattr(event, "last_policy_kind", ""))
        )
        topic = camera.resolved_topic
        if "RELIABILITY" in policy:
            fix = (
                f"the camera on {topic} publishes best effort while qos_reliability is "
                f"'{self.config.qos_reliability}'; fix: set qos_reliability: best_effort "
                "(works with any camera)"
            )
        elif "DURABILITY" in policy:
            fix = "the camera publishes volatile while this subscription asks for more; fix: use the defaults"
        else:
            fix = f"fix: match the camera's QoS (see `ros2 topic info -v {topic}`)"
        self.logger.error(
            f"camera subscription {topic}: a publisher has incompatible QoS (policy {policy}); {fix}"
        )

    def _on_incompatible_type(self, camera: CameraInput, event: Any) -> None:
        expected = "CompressedImage" if camera.transport == "compressed" else "Image"
        self.logger.error(
            f"camera subscription {camera.resolved_topic}: a publisher sends another message type "
            f"than sensor_msgs/{expected} (transport: {camera.transport}); fix: point the topic at the raw "
            "topic with transport raw, or at .../compressed with transport compressed"
        )

    def _on_incompatible_publisher(self, event: Any) -> None:
        policy = getattr(
            getattr(event, "last_policy_kind", None), "name", str(getattr(event, "last_policy_kind", ""))
        )
        self.logger.error(
            f"a subscriber asks for QoS our outputs do not offer (policy {policy}); outputs are reliable and "
            "volatile; fix: subscribe with reliability reliable or best_effort and durability volatile"
        )

    # -------------------------------------------------------------------------------------- per frame

    def now(self) -> float:
        """ROS time in seconds (sim time when use_sim_time is set)."""
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _stamp_now(self, now: Optional[float] = None) -> Any:
        nanoseconds = self.node.get_clock().now().nanoseconds if now is None else round(now * 1e9)
        frame_id = self.drive_camera.last_frame_id if self.drive_camera is not None else ""
        return make_header(self.types, nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000, frame_id)

    def _on_image(self, camera: CameraInput, msg: Any) -> None:
        camera.stats.frame_in(self.now())
        if self._worker is None:
            self._process(camera, msg)
            return
        if self.slots.put(camera.index, msg):
            camera.stats.dropped()

    def _worker_loop(self) -> None:
        """Serve the cameras' latest frames in turn (no camera starves) until the node shuts down; with
        ``overlap`` the frames come decoded from ``_decode_loop`` through the one-frame hand-over."""
        handover = self._handover
        if handover is None:
            while not self.slots.closed:
                if self._batching:
                    ready = self.slots.take_ready(timeout=WORKER_POLL)
                    if ready:
                        self._process_ready([self._prepare(self.cameras[i], msg) for i, msg in ready])
                    continue
                item = self.slots.next(timeout=WORKER_POLL)
                if item is not None:
                    self._process(self.cameras[item[0]], item[1])
            return
        while True:
            got = handover.get(timeout=WORKER_POLL)
            if got is None:
                if handover.closed:
                    return
                continue
            self._process_ready(got)

    def _decode_loop(self) -> None:
        """The first stage of ``overlap``: once the hand-over is empty (the worker took the last frame), take
        the next camera's newest frame in turn and decode it. Waiting BEFORE taking keeps the latest-frame
        policy: frames arriving meanwhile replace each other in the camera slots (counted as dropped), so
        latency stays about decode + one inference, and at most two decoded frames exist (decoders reuse two
        buffers)."""
        handover = self._handover
        assert handover is not None
        while not self.slots.closed:
            if not handover.wait_empty(timeout=WORKER_POLL):
                continue
            if self._batching:  # every camera's waiting frame: they may run as one batch
                ready = self.slots.take_ready(timeout=WORKER_POLL)
            else:
                item = self.slots.next(timeout=WORKER_POLL)
                ready = [item] if item is not None else []
            if ready:
                handover.put([self._prepare(self.cameras[index], msg) for index, msg in ready])

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for name, values in pending.items():
            for head in self._copies(name):
                try:
                    head.task.apply(values)
                except ConfigError as exc:  # validated in the on-set callback; kept for safety
                    self.logger.error(str(exc))

    def _process(
        self, camera: CameraInput, msg: Any, prepared: Any = None, error: Optional[BaseException] = None
    ) -> None:
        """One frame: the pipeline (or, decoded already by ``_decode_loop``, its heads), then publishing. A bad
        frame is counted and skipped, never fatal."""
        self._apply_pending()
        try:
            if error is not None:
                raise error
            if prepared is not None:
                result = camera.processor.finish(prepared, self.now())
            else:
                result = camera.processor.process(msg, self.now())
        except Exception as exc:  # a bad frame or an inference failure must not kill the node: count, log, go on
            self._failed(camera, exc)
            return
        self._deliver(camera, msg, result)

    def _process_ready(self, ready: List[Any]) -> None:
        """Frames of several cameras taken together ((camera, msg, prepared, error) each): the models shared by
        several of them with a batch dimension run them as one batch (pipeline.finish_batch), then each
        camera's results are published."""
        good = []
        for camera, msg, prepared, error in ready:
            if error is not None or prepared is None:
                self._process(camera, msg, prepared, error)
            else:
                good.append((camera, msg, prepared))
        if len(good) == 1:
            self._process(*good[0])
            return
        if not good:
            return
        self._apply_pending()
        now = self.now()
        try:
            results = finish_batch([(camera.processor, prepared, now) for camera, _, prepared in good])
        except Exception as exc:  # the batch failed: every frame in it counts as failed
            for camera, _, _ in good:
                self._failed(camera, exc)
            return
        for (camera, msg, _), result in zip(good, results):
            self._deliver(camera, msg, result)

    def _prepare(self, camera: CameraInput, msg: Any) -> Any:
        """(camera, msg, prepared, error): the frame decoded, or the error that stopped it."""
        try:
            return camera, msg, camera.processor.prepare(msg), None
        except Exception as exc:  # counted and logged by the worker, in frame order
            return camera, msg, None, exc

    def _failed(self, camera: CameraInput, exc: BaseException) -> None:
        period = self.config.bad_frame_log_period
        if isinstance(exc, ImageError):
            camera.stats.bad_frame()
            self.logger.warning(f"bad frame skipped: {camera.label()}{exc}", throttle_duration_sec=period)
        else:
            camera.stats.error()
            self.logger.error(
                f"frame failed ({camera.label()}{type(exc).__name__}: {exc}); skipped", throttle_duration_sec=period
            )

    def _deliver(self, camera: CameraInput, msg: Any, result: Any) -> None:
        """Publish one frame's results and record its latency."""
        period = self.config.bad_frame_log_period
        header = copy_header(self.types, msg.header)
        camera.last_frame_id = header.frame_id
        try:
            self._publish(camera, result, header)
        except Exception as exc:  # a message-building bug: same policy as a failed frame
            camera.stats.error()
            self.logger.error(
                f"publishing failed ({camera.label()}{type(exc).__name__}: {exc})", throttle_duration_sec=period
            )
            return
        done = self.now()
        stamp = stamp_seconds(msg.header)
        # on sim time the clock ticks at /clock's rate, so it can lag an exact image stamp: clamp at 0
        latency = max(0.0, done - stamp) if stamp > 0 else None
        camera.stats.frame_out(done, latency, result.timings)

    def _publish(self, camera: CameraInput, result: Any, header: Any) -> None:
        """Every head's messages; its overlay only while someone subscribes to it."""
        camera.last_outputs = result.outputs
        for head in camera.processor.heads:
            output = result.outputs.get(head.name)
            if output is None:
                continue
            for role, message in head.task.messages(self.types, header, output):
                camera.publishers[(head.name, role)].publish(message)
            if head.task.drives and output.command is not None:
                self._log_stop(output.command)
            overlay = camera.publishers.get((head.name, "overlay"))
            if overlay is not None and head.task.overlay_enabled and overlay.get_subscription_count() > 0:
                self._publish_overlay(camera, head, result, header, overlay)

    def _publish_overlay(self, camera: CameraInput, head: Any, result: Any, header: Any, publisher: Any) -> None:
        """The frame with this head's drawing (and the steering gauge of a driving head) on a reused buffer."""
        import numpy as np

        from trt_perception.overlay import copy_to_canvas

        image = result.image
        order = "bgr" if image.color not in ("rgb", "bgr") else image.color
        shape = (image.height, image.width, 3)
        buffer = camera.overlay_buffers.get(head.name)
        if buffer is None or buffer.shape != shape:
            buffer = camera.overlay_buffers[head.name] = np.empty(shape, np.uint8)  # once per stream size
        canvas = copy_to_canvas(image.array, buffer)
        head.task.draw(canvas, result.outputs[head.name], order)
        for other in camera.processor.heads:
            if other is not head and other.name in result.outputs:
                other.task.decorate(canvas, result.outputs[other.name], order)
        publisher.publish(overlay_image(self.types, header, canvas, _OVERLAY_ENCODING[order]))

    def _log_stop(self, command: DriveCommand) -> None:
        if command.stop and command.reason.startswith(REASON_NONFINITE):
            self.logger.error(f"stopping the car: {command.reason}", throttle_duration_sec=1.0)
        elif command.stop and command.reason.startswith(REASON_STALE_INPUT):
            self.logger.warning(f"stopping the car: {command.reason}", throttle_duration_sec=1.0)

    def _publish_command(self, command: DriveCommand, header: Any, force: bool = False) -> None:
        """Publish a drive command. Per-frame 'disabled' stops are not published: while the pilot is off,
        others (teleop) may drive; the one stop of switching off is published with ``force``."""
        if self.command_pub is None:
            return
        if command.stop and command.reason == REASON_DISABLED and not force:
            return
        self._log_stop(command)
        self.command_pub.publish(self.drive_head.task.command_message(self.types, header, command))

    _watchdog_started = False

    def _on_watchdog(self) -> None:
        now = self.now()
        if not self._watchdog_started:  # first tick with a running clock (sim time starts at 0)
            if now > 0.0:
                self.safety.restart_watchdog(now)
                self._watchdog_started = True
            return
        stop = self.safety.check_watchdog(now)
        if stop is not None:
            topic = self.drive_camera.resolved_topic
            if self.drive_camera.stats.frames_out == 0:  # before the first frame: a state, not news
                self.logger.info(f"waiting for the first frame on {topic}: the car is held stopped")
            else:
                self.logger.warning(f"stopping the car: {stop.reason} on {topic}")
            self._publish_command(stop, self._stamp_now(now))

    def _on_set_enabled(self, request: Any, response: Any) -> Any:
        if self.safety is None:
            response.success = False
            response.message = (
                "no steering head runs (pilot.enabled: false, or no steering head in heads); nothing to enable"
            )
            return response
        name = f"{self.drive_head.name}.drive_enabled"
        parameter = self._Parameter(name, self._Parameter.Type.BOOL, bool(request.data))
        result = self.node.set_parameters([parameter])[0]
        response.success = bool(result.successful)
        if result.successful:
            response.message = "drive enabled" if request.data else "drive disabled: stop published"
        else:
            response.message = result.reason
        return response

    # ------------------------------------------------------------------------------------ diagnostics

    def _on_diagnostics(self) -> None:
        """One status for the node: per camera fps, latency, drops and bad frames (keys prefixed with the
        camera's name when there are several), per head model, backend, stages and the task's own values."""
        now = self.now()
        values: Dict[str, Any] = {}
        backends = []
        level, problems, summaries = "OK", [], []

        def worse(new: str) -> str:
            return "ERROR" if "ERROR" in (level, new) else new

        for camera in self.cameras:
            snap = camera.stats.snapshot(now)
            prefix = f"{camera.name}." if camera.name else ""
            for key, value in snap.items():
                if key.endswith((".p50", ".p95", ".max")):
                    values[f"{prefix}{key} (ms)"] = value * 1000.0
                else:
                    values[f"{prefix}{key}"] = value if not float(value).is_integer() else int(value)
            for head in camera.processor.heads:
                for key, value in head.task.diagnostics(camera.last_outputs.get(head.name)).items():
                    values[f"{prefix}{head.name}.{key}"] = value
            reported = camera.reported
            if snap["errors"] > reported["errors"]:
                level = "ERROR"
                problems.append(f"{camera.label()}{int(snap['errors'] - reported['errors'])} frames failed")
            if snap["fps_in"] == 0.0:
                level = worse("WARN")
                problems.append(self._no_frames_reason(camera))
            if snap["bad_frames"] > reported["bad_frames"]:
                level = worse("WARN")
                problems.append(f"{camera.label()}{int(snap['bad_frames'] - reported['bad_frames'])} bad frames")
            reported["errors"], reported["bad_frames"] = snap["errors"], snap["bad_frames"]
            p95 = snap.get("latency.p95", 0.0)
            if p95 > STALE_STAMP_S:  # not a latency: the stamps come from another clock
                latency = (f"image stamps {p95:.0f} s behind the node's clock (a bag played without --clock and "
                           "use_sim_time, or a camera clock not synced)")
            else:
                latency = f"latency p95 {p95 * 1000:.0f} ms"
            summaries.append(
                f"{camera.label()}in {snap['fps_in']:.1f} fps, out {snap['fps_out']:.1f} fps, "
                f"{latency}, dropped {int(snap['dropped'])}"
            )
        for head in self.heads:
            facts = head.describe()
            backends.append(facts.get("backend", "?"))
            values[f"{head.name}.model"] = self.config.head(head.name).model.model
            for key, value in facts.items():
                values[f"{head.name}.{key}"] = value
        if self.safety is not None:
            if self.safety.error_count > self._nonfinite_reported:
                level = "ERROR"
                problems.append(f"model output NaN/inf: {self.safety.last_error}")
            self._nonfinite_reported = self.safety.error_count
            if self.safety.input_stop_count > self._input_stops_reported:
                level = worse("WARN")
                stops = self.safety.input_stop_count - self._input_stops_reported
                problems.append(f"{stops} stops: {self.safety.last_input_stop}")
            self._input_stops_reported = self.safety.input_stop_count
        if self._sim_time():
            values["latency_clock"] = "sim time: latency = /clock - image stamp, not wall-clock latency"
        message = "; ".join([*problems, *summaries])
        header = make_header(self.types, int(now), int((now % 1.0) * 1e9), "")
        name = f"{self.node.get_name()}: perception"
        self.diagnostics_pub.publish(
            diagnostic_array(self.types, header, name, level, message, ",".join(backends), values)
        )

    def _sim_time(self) -> bool:
        try:
            return bool(self.node.get_parameter("use_sim_time").value)
        except Exception:  # not declared: wall clock
            return False

    def _no_frames_reason(self, camera: CameraInput) -> str:
        """Why a camera delivers nothing, as far as the graph tells: no publisher at all, or publishers whose
        frames never arrive (another message type or incompatible QoS; Cyclone DDS reports neither event)."""
        topic = camera.resolved_topic
        try:
            publishers = self.node.get_publishers_info_by_topic(topic)
        except Exception:  # very old rclpy: say what we can
            publishers = None
        if not publishers:
            return f"no frames on {topic}: nothing publishes it (check the topic name and remapping)"
        expected = "sensor_msgs/msg/CompressedImage" if camera.transport == "compressed" else "sensor_msgs/msg/Image"
        types = sorted({str(getattr(p, "topic_type", "?")) for p in publishers})
        if any(t != expected for t in types):
            return (f"no frames on {topic}: its {len(publishers)} publisher(s) send {types}, this camera expects "
                    f"{expected}; fix: point the topic at the raw topic (transport raw) or at .../compressed "
                    "(transport compressed)")
        return (f"no frames on {topic} although {len(publishers)} publisher(s) send {expected}: likely a QoS "
                f"mismatch (qos_reliability is {self.config.qos_reliability}); see `ros2 topic info -v {topic}`")

    # ---------------------------------------------------------------------------------------- lifetime

    def _startup_line(self) -> str:
        config = self.config
        heads = [
            f"{h.name} ({h.task.name}) {config.head(h.name).model.model} ({h.describe().get('backend', '?')})"
            for h in self.heads
        ]
        inputs = "; ".join(
            f"{c.label()}{c.resolved_topic} ({c.transport}) -> {', '.join(h.name for h in c.processor.heads)}"
            for c in self.cameras
        ) if len(self.cameras) > 1 else f"{self.camera_topic} ({self.cameras[0].transport})"
        outputs = ", ".join(self._resolved(t) for c in self.cameras for t in c.topic_names)
        drive = ""
        if self.drive_head is not None:
            drive = (
                "; drive ENABLED"
                if self.safety is not None and self.safety.enabled
                else (
                    "; drive disabled (enable: ros2 service call "
                    f"{self._resolved('~/set_enabled')} std_srvs/srv/SetBool '{{data: true}}')"
                )
            )
        decoders = sorted({c.processor.decode.describe() for c in self.cameras})
        overlap = ", decode overlapped" if self._handover is not None else ""
        if self._batching:
            shared = {h.name: h.pipeline.batch_capacity for h in self.heads if h.pipeline.batch_capacity > 1}
            overlap += "; cameras' frames batched: " + ", ".join(f"{n} up to {b}" for n, b in shared.items())
        return (
            f"running {', '.join(heads)} on {inputs} ({config.qos_reliability}, depth {config.qos_depth}, "
            f"policy {config.frame_policy}{overlap}; JPEG decoded on {' / '.join(decoders)}); publishing "
            f"{outputs}{drive}"
        )

    def _resolved(self, name: str) -> str:
        try:
            return self.node.resolve_topic_name(name)
        except Exception:  # older rclpy without resolve_topic_name: the relative name is still right
            return name

    def _close_processors(self) -> None:
        for camera in self.cameras:
            camera.processor.close()
        self.cameras = []

    def shutdown(self) -> None:
        """Stop the worker (it finishes its frame), then publish a stop if the pilot may be driving."""
        self.slots.close()
        if self._handover is not None:
            self._handover.close()
        if self.diagnostics_pub is not None:  # a last report: on sim time the timer stops with the bag's clock
            try:
                self._on_diagnostics()
            except Exception as exc:  # the context may already be gone
                self.logger.debug(f"final diagnostics not published: {exc}")
        for thread in (self._decoder, self._worker):
            if thread is not None:
                thread.join(timeout=5.0)
        if self.safety is not None and self.safety.enabled and self.command_pub is not None:
            try:
                self._publish_command(self.safety.stop_command(REASON_SHUTDOWN), self._stamp_now())
                self.logger.info("shutdown: stop command published")
            except Exception as exc:  # the context may already be gone (SIGKILL-like teardown)
                self.logger.error(f"shutdown: could not publish the stop command: {exc}")
        self._close_processors()
        logging.getLogger("trt_perception").removeHandler(self._log_handler)


class _RosLogHandler(logging.Handler):
    """Python ``logging`` records of the package -> the node's ROS logger (rclpy does not route them)."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            else:
                self.ros_logger.info(text)
        except Exception:  # a log line must never break the node
            self.handleError(record)


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of `ros2 run trt_perception perception`; returns the exit code."""
    try:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
    except ImportError as exc:
        print(
            f"trt_perception node needs ROS 2 (cannot import rclpy: {exc}); fix: source your ROS 2 setup "
            "(source /opt/ros/$ROS_DISTRO/setup.bash && source install/setup.bash). Without ROS, use "
            "`trt-perception replay` on a bag.",
            file=sys.stderr,
        )
        return 1
    try:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except (ImportError, TypeError):  # rclpy without signal options: its handler shuts the context down
        rclpy.init(args=args)
    stop = threading.Event()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())  # keep the context up to publish a stop
    node = rclpy.create_node(NODE_NAME)
    app: Optional[PerceptionNode] = None
    code = 0
    try:
        try:
            app = PerceptionNode(node)
        except TrtPerceptionError as exc:
            node.get_logger().fatal(f"cannot start: {exc}")
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except KeyboardInterrupt:  # rclpy without signal options raised it from inside spin
            pass
        except Exception as exc:  # ExternalShutdownException (context shut down by someone else)
            if type(exc).__name__ != "ExternalShutdownException":
                raise
    finally:
        if app is not None:
            app.shutdown()
        node.destroy_node()
        try:
            rclpy.try_shutdown()
        except AttributeError:  # very old rclpy
            if rclpy.ok():
                rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


if __name__ == "__main__":
    sys.exit(main())
