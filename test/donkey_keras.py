"""DonkeyCar's Keras pilot graphs, restated from autorope/donkeycar@cde8bbe9 donkeycar/parts/keras.py (layer for
layer, names included: default_n_linear 846-861, default_memory 864-888, default_categorical 891-906,
default_imu 909-934, default_bhv 937-966, default_loc 969-992, rnn_lstm 995-1026, build_3d_cnn 1029-1085,
core_cnn_layers 821-843), for the TensorFlow parity tests only (imported inside tests marked ``tensorflow``).
Weights are Keras' random initialisation: parity is about the conversion, not about driving."""

from __future__ import annotations

from typing import Any, Tuple


def build(kind: str, input_shape: Tuple[int, int, int] = (120, 160, 3), length: int = 3, behaviors: int = 2,
          locations: int = 8) -> Any:
    import tensorflow as tf
    from tensorflow.keras.backend import concatenate
    from tensorflow.keras.layers import (
        LSTM,
        Activation,
        BatchNormalization,
        Conv3D,
        Convolution2D,
        Dense,
        Dropout,
        Flatten,
        Input,
        MaxPooling2D,
        MaxPooling3D,
    )
    from tensorflow.keras.layers import TimeDistributed as TD
    from tensorflow.keras.models import Model

    def conv2d(filters: int, kernel: int, strides: int, num: int) -> Any:
        return Convolution2D(filters=filters, kernel_size=(kernel, kernel), strides=(strides, strides),
                             activation="relu", name=f"conv2d_{num}")

    def core(img_in: Any, drop: float, l4_stride: int = 1) -> Any:
        x = img_in
        x = Dropout(drop)(conv2d(24, 5, 2, 1)(x))
        x = Dropout(drop)(conv2d(32, 5, 2, 2)(x))
        x = Dropout(drop)(conv2d(64, 5, 2, 3)(x))
        x = Dropout(drop)(conv2d(64, 3, l4_stride, 4)(x))
        x = Dropout(drop)(conv2d(64, 3, 1, 5)(x))
        return Flatten(name="flattened")(x)

    tf.random.set_seed(4)
    drop = 0.2
    if kind in ("linear", "inferred", "categorical", "memory", "imu", "behavior", "localizer"):
        img_in = Input(shape=input_shape, name="img_in")
    if kind in ("linear", "inferred"):
        x = core(img_in, drop)
        x = Dropout(drop)(Dense(100, activation="relu", name="dense_1")(x))
        x = Dropout(drop)(Dense(50, activation="relu", name="dense_2")(x))
        outputs = [Dense(1, activation="linear", name=f"n_outputs{i}")(x) for i in range(2 if kind == "linear" else 1)]
        return Model(inputs=[img_in], outputs=outputs, name="linear")
    if kind == "categorical":
        x = core(img_in, drop, l4_stride=2)
        x = Dropout(drop)(Dense(100, activation="relu", name="dense_1")(x))
        x = Dropout(drop)(Dense(50, activation="relu", name="dense_2")(x))
        angle_out = Dense(15, activation="softmax", name="angle_out")(x)
        throttle_out = Dense(20, activation="softmax", name="throttle_out")(x)
        return Model(inputs=[img_in], outputs=[angle_out, throttle_out], name="categorical")
    if kind == "memory":
        x = core(img_in, drop)
        mem_in = Input(shape=(2 * length,), name="mem_in")
        y = mem_in
        for i in range(1, length):
            y = Dropout(0.1)(Dense(2 * (length - i), activation="relu", name=f"mem_c_{i}")(y))
        x = concatenate([x, y])
        x = Dropout(drop)(Dense(100, activation="relu", name="dense_1")(x))
        x = Dropout(drop)(Dense(50, activation="relu", name="dense_2")(x))
        outputs = [Dense(1, activation=a, name=f"n_outputs{i}")(x) for i, a in enumerate(("tanh", "sigmoid"))]
        return Model(inputs=[img_in, mem_in], outputs=outputs, name="memory")
    if kind == "imu":
        imu_in = Input(shape=(6,), name="imu_in")
        x = Dropout(0.1)(Dense(100, activation="relu")(core(img_in, drop)))
        y = Dense(14, activation="relu")(Dense(14, activation="relu")(Dense(14, activation="relu")(imu_in)))
        z = concatenate([x, y])
        z = Dropout(0.1)(Dense(50, activation="relu")(z))
        z = Dropout(0.1)(Dense(50, activation="relu")(z))
        outputs = [Dense(1, activation="linear", name=f"out_{i}")(z) for i in range(2)]
        return Model(inputs=[img_in, imu_in], outputs=outputs, name="imu")
    if kind == "behavior":
        bvh_in = Input(shape=(behaviors,), name="xbehavior_in")
        x = Dropout(0.1)(Dense(100, activation="relu")(core(img_in, drop)))
        y = bvh_in
        for _ in range(3):
            y = Dense(behaviors * 2, activation="relu")(y)
        z = concatenate([x, y])
        z = Dropout(0.1)(Dense(100, activation="relu")(z))
        z = Dropout(0.1)(Dense(50, activation="relu")(z))
        angle_out = Dense(15, activation="softmax", name="angle_out")(z)
        throttle_out = Dense(20, activation="softmax", name="throttle_out")(z)
        return Model(inputs=[img_in, bvh_in], outputs=[angle_out, throttle_out], name="behavioral")
    if kind == "localizer":
        x = Dropout(drop)(Dense(100, activation="relu")(core(img_in, drop)))
        z = Dropout(drop)(Dense(50, activation="relu")(x))
        angle = Dense(1, activation="linear", name="angle")(z)
        throttle = Dense(1, activation="linear", name="throttle")(z)
        loc = Dense(locations, activation="softmax", name="zloc")(z)
        return Model(inputs=[img_in], outputs=[angle, throttle, loc], name="localizer")
    if kind == "rnn":
        img_in = Input(shape=(length, *input_shape), name="img_in")
        x = img_in
        for filters, kernel, stride in ((24, 5, 2), (32, 5, 2), (32, 3, 2), (32, 3, 1)):
            x = TD(Dropout(0.3))(TD(Convolution2D(filters, (kernel, kernel), strides=(stride, stride),
                                                  activation="relu"))(x))
        x = TD(MaxPooling2D(pool_size=(2, 2)))(x)
        x = TD(Flatten(name="flattened"))(x)
        x = TD(Dropout(0.3))(TD(Dense(100, activation="relu"))(x))
        x = Dropout(0.1)(LSTM(128, return_sequences=True, name="LSTM_seq")(x))
        x = Dropout(0.1)(LSTM(128, return_sequences=False, name="LSTM_fin")(x))
        x = Dropout(0.1)(Dense(128, activation="relu")(x))
        x = Dense(10, activation="relu")(Dense(64, activation="relu")(x))
        out = Dense(2, activation="linear", name="model_outputs")(x)
        return Model(inputs=[img_in], outputs=[out], name="lstm")
    if kind == "3d":
        img_in = Input(shape=(length, *input_shape), name="img_in")
        x = img_in
        x = Conv3D(16, (3, 3, 3), strides=(1, 3, 3), data_format="channels_last", padding="same",
                   activation="relu")(x)
        x = MaxPooling3D(pool_size=(1, 2, 2), strides=(1, 2, 2), padding="valid")(x)
        for filters in (32, 64, 128):
            x = Conv3D(filters, (3, 3, 3), strides=(1, 1, 1), data_format="channels_last", padding="same",
                       activation="relu")(x)
            x = MaxPooling3D(pool_size=(1, 2, 2), strides=(1, 2, 2), padding="valid")(x)
        x = Flatten()(x)
        for _ in range(2):
            x = Dropout(0.5)(Activation("relu")(BatchNormalization()(Dense(256)(x))))
        out = Dense(2, name="outputs")(x)
        return Model(inputs=[img_in], outputs=out, name="3dcnn")
    raise ValueError(kind)


def to_tflite(model: Any, path: str) -> None:
    """interpreter.keras_to_tflite (interpreter.py:55-80) without quantization."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.allow_custom_ops = True
    with open(path, "wb") as handle:
        handle.write(converter.convert())
