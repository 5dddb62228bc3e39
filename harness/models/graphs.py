"""The TensorFlow half of the model zoo: one `tf.Module` per built-in model.

Imported only by `harness.models.zoo.build_model` (it imports TensorFlow). Every module has a
`serve` tf.function with a fixed input signature whose dimension 0 is None; `save_model` writes it
as the `serving_default` signature, so TF Serving's session loader (`loader.load(sess, ["serve"],
path)` then `sess.run` by tensor names) can run it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf


def save_model(name: str, options: dict[str, int | float], seed: int, path: Path) -> None:
    """Build model `name` with resolved `options` and weights from `seed`; save it at `path`."""
    module = _BUILDERS[name](seed, **options)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


class _Init:
    """Deterministic weights: variable i of a model is drawn from the stateless seed (seed, i)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._count = 0

    def weight(self, shape: list[int], fan_in: int, name: str) -> tf.Variable:
        # Scale 1/sqrt(fan_in) keeps activations O(1) through the layers.
        self._count += 1
        draw = tf.random.stateless_normal(shape, seed=[self._seed, self._count])
        return tf.Variable(draw / math.sqrt(fan_in), name=name)


def _zeros(shape: list[int], name: str) -> tf.Variable:
    return tf.Variable(tf.zeros(shape), name=name)


def _ones(shape: list[int], name: str) -> tf.Variable:
    return tf.Variable(tf.ones(shape), name=name)


class _Mlp(tf.Module):
    """x [b, features] -> relu dense [b, hidden] -> dense y [b, outputs]."""

    def __init__(self, seed: int, features: int, hidden: int, outputs: int) -> None:
        super().__init__(name="mlp")
        init = _Init(seed)
        self.w1 = init.weight([features, hidden], features, "w1")
        self.b1 = _zeros([hidden], "b1")
        self.w2 = init.weight([hidden, outputs], hidden, "w2")
        self.b2 = _zeros([outputs], "b2")
        spec = tf.TensorSpec([None, features], tf.float32, name="x")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        hidden = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
        return {"y": tf.matmul(hidden, self.w2) + self.b2}


class _Block(tf.Module):
    """One pre-norm transformer encoder block: self-attention then a feed-forward layer."""

    def __init__(self, init: _Init, d_model: int, heads: int, index: int) -> None:
        super().__init__(name=f"block{index}")
        self.heads = heads
        self.qkv = init.weight([d_model, 3 * d_model], d_model, "qkv")
        self.out = init.weight([d_model, d_model], d_model, "out")
        self.ff1 = init.weight([d_model, 4 * d_model], d_model, "ff1")
        self.ff1_bias = _zeros([4 * d_model], "ff1_bias")
        self.ff2 = init.weight([4 * d_model, d_model], 4 * d_model, "ff2")
        self.ff2_bias = _zeros([d_model], "ff2_bias")
        self.norm1 = (_ones([d_model], "norm1_scale"), _zeros([d_model], "norm1_shift"))
        self.norm2 = (_ones([d_model], "norm2_scale"), _zeros([d_model], "norm2_shift"))

    def __call__(self, h: tf.Tensor) -> tf.Tensor:
        h = h + tf.einsum("bsd,de->bse", self._attend(_layer_norm(h, self.norm1)), self.out)
        normed = _layer_norm(h, self.norm2)
        hidden = tf.nn.relu(tf.einsum("bsd,de->bse", normed, self.ff1) + self.ff1_bias)
        return h + tf.einsum("bsd,de->bse", hidden, self.ff2) + self.ff2_bias

    def _attend(self, h: tf.Tensor) -> tf.Tensor:
        q, k, v = (
            self._split_heads(t)
            for t in tf.split(tf.einsum("bsd,de->bse", h, self.qkv), 3, axis=-1)
        )
        depth = tf.cast(tf.shape(q)[-1], tf.float32)
        weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / tf.sqrt(depth), axis=-1)
        merged = tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3])  # [b, s, heads, depth]
        return tf.reshape(merged, tf.shape(h))

    def _split_heads(self, t: tf.Tensor) -> tf.Tensor:
        batch_seq = tf.shape(t)[:2]
        split = tf.reshape(t, tf.concat([batch_seq, [self.heads, -1]], axis=0))
        return tf.transpose(split, [0, 2, 1, 3])  # [b, heads, s, depth]


class _Encoder(tf.Module):
    """tokens int32 [b, s] (any s) -> embedding + sine positions -> blocks -> mean over s.

    No token id is special: TF Serving pads short sequences with their first element when
    it pads variable-length inputs, so padding is part of the input like any other token.
    """

    def __init__(self, seed: int, vocab: int, d_model: int, layers: int, heads: int) -> None:
        super().__init__(name="transformer")
        init = _Init(seed)
        self.embedding = init.weight([vocab, d_model], 1, "embedding")
        self.blocks = [_Block(init, d_model, heads, i) for i in range(layers)]
        self.final_norm = (_ones([d_model], "final_scale"), _zeros([d_model], "final_shift"))
        spec = tf.TensorSpec([None, None], tf.int32, name="tokens")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        d_model = self.embedding.shape[1]
        h = tf.gather(self.embedding, tokens) + _positions(tf.shape(tokens)[1], d_model)
        for block in self.blocks:
            h = block(h)
        return {"embedding": tf.reduce_mean(_layer_norm(h, self.final_norm), axis=1)}


def _layer_norm(h: tf.Tensor, params: tuple[tf.Variable, tf.Variable]) -> tf.Tensor:
    mean, variance = tf.nn.moments(h, axes=[-1], keepdims=True)
    return (h - mean) * tf.math.rsqrt(variance + 1e-6) * params[0] + params[1]


def _positions(length: tf.Tensor, d_model: int) -> tf.Tensor:
    """Sinusoidal position codes [length, d_model]: sine on even channels, cosine on odd."""
    position = tf.cast(tf.range(length), tf.float32)[:, None]
    channel = tf.range(d_model)
    rate = tf.pow(10000.0, -tf.cast(2 * (channel // 2), tf.float32) / d_model)
    angle = position * rate[None, :]
    return tf.where(channel % 2 == 0, tf.sin(angle), tf.cos(angle))


class _Synthetic(tf.Module):
    """x [b, features] -> y [b, 1] = row sums, after sleeping fixed_ms + per_item_ms * b.

    The sleep is tf.data's SleepDataset, which waits on a condition variable (no CPU burnt) and
    runs inside the graph, so the model goes through the same loading and batching path as the
    others. SleepDataset sleeps before every GetNext, including the one that finds the end of
    the data; get_single_element makes that second call (it checks there is exactly one
    element), which doubled the sleep. `take(1)` answers the second call itself without asking
    the sleeping dataset, so the sleep happens exactly once.
    """

    def __init__(self, seed: int, features: int, fixed_ms: float, per_item_ms: float) -> None:
        super().__init__(name="synthetic")
        del seed  # no weights
        self.fixed_ms = fixed_ms
        self.per_item_ms = per_item_ms
        spec = tf.TensorSpec([None, features], tf.float32, name="x")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        # Imported here: a private TF module, needed by this model only.
        from tensorflow.python.data.experimental.ops import testing

        rows = tf.cast(tf.shape(x)[0], tf.float64)
        micros = tf.cast(tf.round((self.fixed_ms + self.per_item_ms * rows) * 1000.0), tf.int64)
        slept = tf.data.Dataset.from_tensors(x).apply(testing.sleep(micros)).take(1)
        # y is computed from the slept element, so it cannot be produced before the sleep ends.
        return {"y": tf.reduce_sum(slept.get_single_element(), axis=1, keepdims=True)}


class _Cnn(tf.Module):
    """image float32 [b, s, s, 3] in [-1, 1] -> Keras MobileNetV2 (random weights) -> softmax."""

    def __init__(self, seed: int, image_size: int, classes: int) -> None:
        super().__init__(name="cnn")
        net = _mobilenet(seed, image_size, classes)
        # Track the raw tf.Variables, not the Keras model: a tracked Keras 3 model puts two
        # handles per variable in the graph, and the TF1 session loader then restores only one
        # of them ("Could not find variable ... moving_variance" at run time).
        self.weights_ = [weight.value for weight in net.weights]
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="image")

        def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"probabilities": net(image, training=False)}

        self.serve = tf.function(serve, input_signature=[spec])


def _mobilenet(seed: int, image_size: int, classes: int):
    """A MobileNetV2 with random weights and BatchNorm statistics calibrated on noise.

    With freshly initialised BatchNorm statistics (mean 0, variance 1) the activations of a
    random MobileNetV2 shrink to ~1e-12 by the last block and every image gets the same uniform
    answer. One training-mode pass with momentum 0 sets each layer's statistics to those of a
    batch of random images, so outputs stay O(1) and differ by input and seed.
    """
    import keras
    import numpy as np

    # MobileNetV2 draws its initial weights from Keras's global generators.
    keras.utils.set_random_seed(seed)
    net = keras.applications.MobileNetV2(
        weights=None, input_shape=(image_size, image_size, 3), classes=classes
    )
    norms = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    noise = np.random.default_rng(seed).uniform(-1.0, 1.0, (8, image_size, image_size, 3))
    net(noise.astype(np.float32), training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    return net


_BUILDERS: dict[str, Callable[..., tf.Module]] = {
    "mlp": _Mlp,
    "cnn": _Cnn,
    "transformer": _Encoder,
    "synthetic": _Synthetic,
}
