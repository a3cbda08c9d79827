"""Classification: logits or probabilities -> top-k labels -> ``vision_msgs/Classification``.

A traffic-sign or scene classifier next to the detector. The parser (``outputs/classification.py``) applies
the spec's activation and picks the top k; here the labels are attached and the message built with the
image's header.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from trt_perception.outputs.base import ClassificationSettings, RawClassification
from trt_perception.params import BOOL, DOUBLE, INT, USE_SPEC, live
from trt_perception.preprocess import ImageTransform
from trt_perception.results import Classification
from trt_perception.tasks.base import HeadOutput, Task, Topic


class ClassificationTask(Task):
    name = "classification"
    PARAMS = (
        live("top_k", 0, INT, "how many classes to publish, best first; 0 = the model spec's value", range=(0, 1000)),
        live(
            "score_threshold",
            USE_SPEC,
            DOUBLE,
            "classes below this probability are not published; -1 = the model spec's value",
            range=(0.0, 1.0),
            special=USE_SPEC,
        ),
        live("publish_overlay", True, BOOL, "publish <classification>/overlay (the frame with the top classes)"),
    )

    def __init__(self, head: str, spec: Any, values: Mapping[str, Any], clock: Any = None) -> None:
        super().__init__(head, spec, values, clock)
        self._settings = ClassificationSettings.from_spec(spec.classification)
        self.apply(self.values)

    def apply(self, values: Mapping[str, Any]) -> None:
        super().apply(values)
        spec = self.spec.classification
        top_k = int(values.get("top_k", 0) or 0)
        score = values.get("score_threshold", USE_SPEC)
        self._settings.top_k = top_k if top_k > 0 else spec.top_k
        self._settings.score_threshold = spec.score_threshold if score == USE_SPEC else float(score)

    @property
    def settings(self) -> ClassificationSettings:
        return self._settings

    def finish(self, parsed: RawClassification, transform: ImageTransform, now: float) -> HeadOutput:
        spec = self.spec.classification
        labels = [spec.label_for(c) for c in parsed.class_ids.tolist()]
        return HeadOutput(self.head, self.name, Classification(parsed.class_ids, parsed.scores, labels))

    def topics(self, prefix: str) -> List[Topic]:
        return [
            Topic("classification", f"{prefix}classification", "Classification"),
            Topic("overlay", f"{prefix}classification/overlay", "Image", overlay=True),
        ]

    def messages(self, types: Any, header: Any, output: HeadOutput) -> Iterator[Tuple[str, Any]]:
        from trt_perception.messages import classification_message

        yield "classification", classification_message(types, header, output.result)

    def draw(self, canvas: np.ndarray, output: HeadOutput, order: str) -> np.ndarray:
        from trt_perception.overlay import draw_classification

        return draw_classification(canvas, output.result, order, out=canvas)

    def diagnostics(self, output: Optional[HeadOutput]) -> Dict[str, Any]:
        if output is None or len(output.result) == 0:
            return {}
        result = output.result
        return {"top": f"{result.labels[0]} {float(result.scores[0]):.2f}"}
