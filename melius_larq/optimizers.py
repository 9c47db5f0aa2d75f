"""RAdam for tf_keras 2.16 (TensorFlow Addons, which had one, is end-of-life).

References:
    - [On the Variance of the Adaptive Learning Rate and Beyond](https://arxiv.org/abs/1908.03265),
      Liu et al. 2019 (RAdam).
    - MeliusNet trains with RAdam, beta_1 = 0.95, epsilon = 1e-5 and a variance-rectification
      threshold of 5 (the authors' BMXNet-v2 training code).
"""

from __future__ import annotations

from melius_larq._compat import tf

__all__ = ["RAdam"]


@tf.keras.utils.register_keras_serializable(package="melius_larq")
class RAdam(tf.keras.optimizers.Optimizer):
    r"""Rectified Adam.

    With \(g_t\) the gradient at step \(t\) (from 1), \(\rho_\infty = 2/(1-\beta_2) - 1\) and
    \(\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)\):

    \[
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
    \]
    \[
    w_t = w_{t-1} - \begin{cases}
      \eta\, \frac{r_t \sqrt{1-\beta_2^t}}{1-\beta_1^t} \frac{m_t}{\sqrt{v_t} + \epsilon}
        & \rho_t \ge \rho_{\min} \\
      \eta\, \frac{m_t}{1-\beta_1^t} & \text{otherwise}
    \end{cases}
    \qquad r_t = \sqrt{\tfrac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
    \]

    i.e. Adam whose step is rectified by \(r_t\) once the variance of the adaptive learning
    rate is tractable (\(\rho_t \ge \rho_{\min}\)), and SGD with bias-corrected momentum before.

    Args:
        learning_rate: float or ``LearningRateSchedule``. MeliusNet: 0.002 (0.003 for 59)
            with a per-step cosine decay to 0.
        beta_1: first-moment decay. Defaults to MeliusNet's 0.95.
        beta_2: second-moment decay. Defaults to 0.999.
        epsilon: added to \(\sqrt{v_t}\). Defaults to MeliusNet's 1e-5.
        rectify_threshold: \(\rho_{\min}\); 5 as in BMXNet-v2 and the RAdam reference code.
        **kwargs: forwarded to ``tf.keras.optimizers.Optimizer`` (e.g. ``weight_decay``,
            ``clipnorm``, ``jit_compile``).
    """

    def __init__(
        self,
        learning_rate=0.002,
        beta_1: float = 0.95,
        beta_2: float = 0.999,
        epsilon: float = 1e-5,
        rectify_threshold: float = 5.0,
        name: str = "RAdam",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        for arg, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"Expected `{arg}` in [0, 1), but got {value!r}.")
        if epsilon < 0:
            raise ValueError(f"Expected `epsilon` >= 0, but got {epsilon!r}.")
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.rectify_threshold = rectify_threshold

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._momentums = [self.add_variable_from_reference(v, "m") for v in var_list]
        self._velocities = [self.add_variable_from_reference(v, "v") for v in var_list]

    def _step_scales(self, dtype):
        """The step's two scalars shared by every variable: ``(adaptive, plain)``.

        The update is ``m_t * (adaptive / (sqrt(v_t) + epsilon) + plain)``: ``adaptive`` is
        \(\eta r_t \sqrt{1-\beta_2^t}/(1-\beta_1^t)\) once rectified and 0 before,
        ``plain`` is \(\eta/(1-\beta_1^t)\) before and 0 after.
        """
        lr = tf.cast(self.learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), step)
        beta_2 = tf.cast(self.beta_2, dtype)
        beta_2_power = tf.pow(beta_2, step)
        rho_inf = 2.0 / (1.0 - beta_2) - 1.0
        rho = rho_inf - 2.0 * step * beta_2_power / (1.0 - beta_2_power)
        rectified = rho >= tf.cast(self.rectify_threshold, dtype)
        # The where() keeps the square root finite for rho < 4, where it is not used.
        safe_rho = tf.where(rectified, rho, rho_inf)
        r = tf.sqrt(
            (safe_rho - 4.0) * (safe_rho - 2.0) * rho_inf
            / ((rho_inf - 4.0) * (rho_inf - 2.0) * safe_rho)
        )  # fmt: skip
        corrected_lr = lr / (1.0 - beta_1_power)
        zero = tf.zeros([], dtype)
        adaptive = tf.where(rectified, corrected_lr * r * tf.sqrt(1.0 - beta_2_power), zero)
        return adaptive, tf.where(rectified, zero, corrected_lr)

    def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
        # The step's scalars are computed once per dtype and shared by every variable's
        # update: per variable they cost ~40 scalar ops in every training step and in the
        # trace (about 10 s of tracing and 10 % of a MeliusNetTiny step with ~120 variables).
        # An XLA-compiled update step is a function of its own and computes them itself.
        self._shared_scales = None if self.jit_compile else {}
        try:
            return super()._distributed_apply_gradients_fn(distribution, grads_and_vars, **kwargs)
        finally:
            self._shared_scales = None

    def update_step(self, gradient, variable):
        dtype = variable.dtype
        shared = getattr(self, "_shared_scales", None)
        if shared is None:
            adaptive, plain = self._step_scales(dtype)
        else:
            if dtype not in shared:
                shared[dtype] = self._step_scales(dtype)
            adaptive, plain = shared[dtype]
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        m.assign(beta_1 * m + (1 - beta_1) * gradient)
        v.assign(beta_2 * v + (1 - beta_2) * tf.square(gradient))
        variable.assign_sub(m * (adaptive / (tf.sqrt(v) + self.epsilon) + plain))

    def get_config(self):
        return {
            **super().get_config(),
            "learning_rate": self._serialize_hyperparameter(self._learning_rate),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "rectify_threshold": self.rectify_threshold,
        }
