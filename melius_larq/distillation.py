"""Knowledge distillation from a float teacher into a binary student.

The loss is Hinton et al.'s (2015, "Distilling the Knowledge in a Neural Network"):

    loss = w * CE(labels, softmax(s)) + (1 - w) * T^2 * KL(softmax(t / T) || softmax(s / T))

with student logits ``s``, teacher logits ``t``, weight ``w`` and temperature ``T``; the ``T^2``
keeps the soft term's gradient scale independent of ``T``. Binary networks are commonly
trained this way (Martinez et al. 2020, "Training Binary Neural Networks with Real-to-Binary
Convolutions", larq-zoo's multi-stage training).

Example:
    ```python
    import melius_larq
    import tensorflow as tf

    teacher = tf.keras.Sequential([
        tf.keras.layers.Input((8, 8, 1)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(3),
        tf.keras.layers.Activation("softmax"),
    ])
    student = tf.keras.Sequential([
        tf.keras.layers.Input((8, 8, 1)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(3, activation="softmax"),
    ])
    distiller = melius_larq.Distiller(student, teacher, kd_weight=0.5, temperature=4.0)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    x = tf.random.normal((32, 8, 8, 1))
    y = tf.random.uniform((32,), maxval=3, dtype=tf.int64)
    history = distiller.fit(x, y, epochs=1, verbose=0)
    print(sorted(history.history))
    ```
    ```text
    ['accuracy', 'loss']
    ```
    ``distiller.student`` is the trained model (softmax outputs), to save and convert.
"""

from __future__ import annotations

import math

from melius_larq._compat import tf

__all__ = ["DistillationLoss", "Distiller", "check_teacher", "distillation_loss", "logits_model"]

# Probabilities are clipped here before a log when a model exposes no logits tensor (a Dense
# layer with a built-in softmax): e^-69 is far below any probability that moves the soft term.
_MIN_PROBABILITY = 1e-30


def _check_options(kd_weight, temperature) -> None:
    if not isinstance(kd_weight, (int, float)) or not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight={kd_weight!r} is outside [0, 1].")
    if not isinstance(temperature, (int, float)) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"kd_temperature={temperature!r} must be a finite number > 0.")


def distillation_loss(labels, student_logits, teacher_logits, *, kd_weight, temperature):
    """Per-example distillation loss (see the module docstring).

    Args:
        labels: integer class labels ``[B]`` or ``[B, 1]``.
        student_logits, teacher_logits: ``[B, C]`` logits.
        kd_weight: ``w`` in [0, 1], the weight of the cross-entropy with the labels.
        temperature: ``T`` > 0.

    Returns:
        ``[B]`` float32 losses.
    """
    _check_options(kd_weight, temperature)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    s = tf.cast(student_logits, tf.float32)
    t = tf.cast(teacher_logits, tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, s)
    soft_t = tf.nn.softmax(t / temperature)
    kl = tf.reduce_sum(
        soft_t * (tf.nn.log_softmax(t / temperature) - tf.nn.log_softmax(s / temperature)), -1
    )
    return kd_weight * ce + (1.0 - kd_weight) * temperature**2 * kl


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class DistillationLoss(tf.keras.losses.Loss):
    """:func:`distillation_loss` as a Keras loss on logits.

    ``y_true`` packs the label and the teacher logits as ``[B, 1 + C]`` (label first); a
    ``y_true`` of labels only (``[B]`` or ``[B, 1]``) gives the plain cross-entropy, which is
    what :class:`Distiller` reports on validation data.
    """

    def __init__(self, kd_weight: float = 0.5, temperature: float = 4.0, name="distillation", **kw):
        _check_options(kd_weight, temperature)
        super().__init__(name=name, **kw)
        self.kd_weight = float(kd_weight)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        y_true, y_pred = tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred)
        if y_true.shape.rank == 2 and y_true.shape[-1] == 1 + y_pred.shape[-1]:
            return distillation_loss(
                y_true[:, 0], y_pred, y_true[:, 1:], kd_weight=self.kd_weight,
                temperature=self.temperature,
            )  # fmt: skip
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(y_pred, tf.float32))

    def get_config(self):
        return {**super().get_config(), "kd_weight": self.kd_weight,
                "temperature": self.temperature}  # fmt: skip


def logits_model(model: tf.keras.Model) -> tf.keras.Model:
    """A model sharing ``model``'s layers that outputs logits instead of probabilities.

    A final ``Activation("softmax")`` layer (the melius_larq builders' ``head_softmax``) is
    dropped; a last layer with a built-in softmax gives ``log(probabilities)``, which equals the
    logits up to a per-example constant that softmax ignores (probabilities are clipped at
    1e-30); any other model is taken to output logits already.
    """
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    is_softmax = (
        activation is tf.keras.activations.softmax
        or getattr(activation, "__name__", "") == "softmax"
    )
    if isinstance(last, tf.keras.layers.Activation) and is_softmax:
        return tf.keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    if is_softmax:
        log_p = tf.keras.layers.Lambda(
            lambda p: tf.math.log(tf.maximum(tf.cast(p, tf.float32), _MIN_PROBABILITY)),
            name="log_probabilities",
        )(model.outputs[0])
        return tf.keras.Model(model.inputs, log_p, name=f"{model.name}_logits")
    return model


def check_teacher(teacher, student) -> None:
    """Raises ValueError when ``teacher`` is no Keras model or does not fit ``student``.

    Both must take the same input shape and predict the same number of classes.
    """
    if not isinstance(teacher, tf.keras.Model):
        raise ValueError(f"The teacher must be a Keras model, but got {type(teacher).__name__}.")
    if tuple(teacher.input_shape[1:]) != tuple(student.input_shape[1:]):
        raise ValueError(
            f"The teacher takes inputs of shape {tuple(teacher.input_shape[1:])}, the student "
            f"{tuple(student.input_shape[1:])}; they must match."
        )
    if teacher.output_shape[-1] != student.output_shape[-1]:
        raise ValueError(
            f"The teacher predicts {teacher.output_shape[-1]} classes, the student "
            f"{student.output_shape[-1]}; they must match."
        )


class Distiller(tf.keras.Model):
    """Trains ``student`` against labels and a frozen ``teacher``'s soft predictions.

    Calling the distiller returns the student's logits. ``compile`` it with an optimizer and
    metrics; the loss is :class:`DistillationLoss` with ``kd_weight`` and ``temperature``.
    Training steps pack the teacher's logits next to the labels; evaluation reports the
    student's plain cross-entropy, so validation losses compare with runs without a teacher.
    The student's own losses (regularizers) are added. Save ``distiller.student``.

    Args:
        student: the model to train (softmax or logits outputs).
        teacher: a trained model with the same input shape and number of classes; it is
            run in inference mode and never updated (the distiller's trainable weights are
            the student's; the teacher object itself is not modified).
        kd_weight: weight ``w`` of the cross-entropy with the labels, in [0, 1].
        temperature: softening temperature ``T`` > 0.

    Raises:
        ValueError: for a teacher that does not fit the student or options out of range.
    """

    def __init__(self, student, teacher, *, kd_weight=0.5, temperature=4.0, **kwargs):
        super().__init__(**kwargs)
        check_teacher(teacher, student)
        _check_options(kd_weight, temperature)
        self.student = student
        self.teacher = teacher
        self.kd_weight = float(kd_weight)
        self.temperature = float(temperature)
        self._student_logits = logits_model(student)
        self._teacher_logits = logits_model(teacher)

    def call(self, inputs, training=None):
        return self._student_logits(inputs, training=training)

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        if loss is not None:
            raise ValueError("Distiller sets its own loss (DistillationLoss); do not pass one.")
        loss = DistillationLoss(self.kd_weight, self.temperature)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    @property
    def trainable_weights(self):
        return self.student.trainable_weights

    @property
    def non_trainable_weights(self):
        return self.student.non_trainable_weights + self.teacher.weights

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        # evaluation: the student's cross-entropy plus its own regularizers
        return self.compiled_loss(
            y, y_pred, sample_weight, regularization_losses=self.student.losses
        )

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        teacher = tf.cast(self._teacher_logits(x, training=False), tf.float32)
        labels = tf.reshape(tf.cast(y, tf.float32), [-1, 1])
        packed = tf.concat([labels, tf.stop_gradient(teacher)], axis=-1)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compiled_loss(
                packed, y_pred, sample_weight, regularization_losses=self.student.losses
            )
        self.optimizer.minimize(loss, self.student.trainable_variables, tape=tape)
        return self.compute_metrics(x, y, y_pred, sample_weight)
