"""The decoders: soft attention (Show, Attend and Tell), and the two seed designs it grew from.

- :class:`AttentionDecoder` (Xu et al., 2015), the shipped model: it looks at
  the L = 196 regions anew for every word;
- :class:`InjectDecoder` (Show and Tell, Vinyals et al., 2015): the image
  vector becomes the LSTM's initial state, then words follow;
- :class:`MergeDecoder` (Tanti et al., 2018; the common Keras tutorials): an
  LSTM reads the caption so far without the image, and the image vector is
  added to its output just before the word is predicted.

Notation follows Xu et al.: a_i are the L annotation vectors (one per 14 x 14
region, D = 512 wide), h_t the LSTM state, alpha_t the attention weights, z_t
the context vector, y_t the word. Inject and merge read the mean of the a_i,
the paper's own summary of the photo (or a pooled vector, L = 1).

Every decoder has the same three calls, and everything that decodes (teacher
forcing in training, greedy, beam search, sampling, the step-through of the
teacher view) goes through them:

    prepare(features)  -> h_0, c_0, projected   once per photo
    step(y, h, c, features, projected) -> logits, h, c, alpha, beta   one word
    call(features, tokens) -> logits, alphas    teacher forcing, all words

``alpha`` is (B, L) for the attention decoder and (B, 0) for the others, and
``beta`` (B, 1) is the mean of the attention gate (B, 0 without attention).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .config import ModelConfig
from .encoder import feature_shape
from .vocab import Vocabulary

PAD_ID, START_ID, END_ID, UNK_ID = Vocabulary.pad_id, Vocabulary.start_id, Vocabulary.end_id, Vocabulary.unk_id
BLOCKED = -1e4  # added to the logit of a word the sampler may not draw: exp(-1e4) is 0 in float32

PACKAGE = "captioner"  # never rename: saved files refer to layers by this name


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftAttention(layers.Layer):
    """f_att: e_ti = w^T tanh(W_a a_i + W_h h_{t-1}), alpha_t = softmax(e_t)  (eqs. 4-5)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.feature_proj = layers.Dense(units, name="feature_proj")  # W_a
        self.state_proj = layers.Dense(units, use_bias=False, name="state_proj")  # W_h

    def build(self, features_shape, state_shape):
        self.feature_proj.build(features_shape)
        self.state_proj.build(state_shape)
        self.score = self.add_weight(shape=(self.units,), initializer="glorot_uniform", name="score")  # w
        self.built = True

    def project(self, features):
        """W_a a_i for every region, once per photo: (B, L, D) -> (B, L, A)."""
        return self.feature_proj(features)

    def call(self, projected, state):
        hidden = ops.tanh(projected + ops.expand_dims(self.state_proj(state), 1))  # (B, L, A)
        scores = ops.einsum("bla,a->bl", hidden, self.score)  # (B, L)   e_ti
        return ops.softmax(scores, axis=-1)  # alpha_t: (B, L), each row sums to 1

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionDecoder(layers.Layer):
    """LSTM decoder with soft attention, the gating scalar beta and a deep output layer."""

    def __init__(self, vocab_size: int, feature_dim: int = 512, embed_dim: int = 256, lstm_units: int = 512,
                 attention_dim: int = 512, dropout: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.feature_dim = feature_dim
        self.embed_dim = embed_dim
        self.lstm_units = lstm_units
        self.attention_dim = attention_dim
        self.dropout = dropout

        self.embedding = layers.Embedding(vocab_size, embed_dim, name="embedding")  # E
        self.init_h = layers.Dense(lstm_units, activation="tanh", name="init_h")  # f_init,h
        self.init_c = layers.Dense(lstm_units, activation="tanh", name="init_c")  # f_init,c
        self.attention = SoftAttention(attention_dim, name="attention")
        self.gate = layers.Dense(feature_dim, activation="sigmoid", name="gate")  # f_beta (sec. 4.2.1)
        self.cell = layers.LSTMCell(lstm_units, name="lstm")
        self.out_h = layers.Dense(embed_dim, name="out_h")  # L_h
        self.out_z = layers.Dense(embed_dim, use_bias=False, name="out_z")  # L_z
        self.logits = layers.Dense(vocab_size, name="logits")  # L_o
        self.drop = layers.Dropout(dropout)

    def build(self, features_shape=None):
        B, L, D, n, m = None, None, self.feature_dim, self.lstm_units, self.embed_dim
        self.embedding.build((B,))
        self.init_h.build((B, D))
        self.init_c.build((B, D))
        self.attention.build((B, L, D), (B, n))
        self.gate.build((B, n))
        self.cell.build((B, m + D))
        self.out_h.build((B, n))
        self.out_z.build((B, D))
        self.logits.build((B, m))
        self.built = True

    def prepare(self, features):
        """Everything computed once per photo: the initial state and W_a a_i.

        features (B, L, D) -> (h_0, c_0) each (B, n), projected (B, L, A).
        """
        mean = ops.mean(features, axis=1)  # (B, D): the paper's mean annotation vector
        return self.init_h(mean), self.init_c(mean), self.attention.project(features)

    def recur(self, tokens, h, c, features, projected, training=False):
        """Attend, then advance the LSTM by one word (eqs. 1-6).

        tokens (B,) int; h, c (B, n); features (B, L, D); projected (B, L, A).
        Returns h_t, c_t (B, n), z_t (B, D), alpha_t (B, L), E y_{t-1} (B, m).
        """
        alpha = self.attention(projected, h)  # (B, L)   eq. 5
        context = ops.einsum("bl,bld->bd", alpha, features)  # (B, D)   eq. 6, soft: sum_i alpha_ti a_i
        context = self.gate(h) * context  # z_t = beta * sum_i alpha_ti a_i,  beta = sigmoid(f_beta(h_{t-1}))
        embedded = self.embedding(tokens)  # (B, m)   E y_{t-1}
        x = ops.concatenate([embedded, context], axis=-1)  # (B, m + D)
        h, (h, c) = self.cell(x, [h, c], training=training)  # eqs. 1-3
        return h, c, context, alpha, embedded

    def output(self, embedded, h, context, training=False):
        """Deep output layer, eq. 7: p(y_t) ~ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t)).

        Works on one step (B, .) or on all steps at once (B, T, .); returns logits (..., V).
        """
        out = embedded + self.out_h(self.drop(h, training=training)) + self.out_z(context)  # (..., m)
        return self.logits(self.drop(out, training=training))  # (..., V)

    has_attention = True

    def step(self, tokens, h, c, features, projected, training=False):
        """One time step: y_{t-1}, (h, c)_{t-1} -> logits for y_t (B, V), (h, c)_t, alpha_t (B, L), beta_t (B, 1).

        beta_t is the gate of sec. 4.2.1, averaged over its D values: how much of the attended
        context reaches the LSTM (near 0 for words the caption so far predicts, such as "of").
        """
        beta = ops.mean(self.gate(h), axis=-1, keepdims=True)  # (B, 1), from h_{t-1}, as recur uses it
        h, c, context, alpha, embedded = self.recur(tokens, h, c, features, projected, training)
        return self.output(embedded, h, context, training), h, c, alpha, beta

    def call(self, features, tokens, training=False):
        """Teacher forcing: features (B, L, D), tokens (B, T) starting with <start>.

        Runs :meth:`recur` over the T steps (``ops.scan``, any backend), then
        :meth:`output` on all steps in one matrix product. Returns logits
        (B, T, V) and attention (B, T, L). T may change from batch to batch
        (length buckets).
        """
        h, c, projected = self.prepare(features)
        batch = ops.shape(features)[0]

        def body(carry, token):  # token (B,): y_{t-1} for every photo
            h, c = carry[:2]
            step = self.recur(token, h, c, features, projected, training=training)  # h, c, z, alpha, E y
            return step, step  # scan's TensorFlow version wants the outputs shaped like the carry

        start = (h, c, ops.zeros((batch, self.feature_dim)), ops.zeros_like(projected[..., 0]),
                 ops.zeros((batch, self.embed_dim)))  # the same shapes as recur's z, alpha and E y
        _, per_step = ops.scan(body, start, ops.transpose(tokens))  # each (T, B, .)
        hs, _, contexts, alphas, embedded = (ops.transpose(x, (1, 0, 2)) for x in per_step)  # (B, T, .)
        logits = self.output(embedded, hs, contexts, training=training)  # (B, T, V)
        return logits, alphas

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "feature_dim": self.feature_dim,
            "embed_dim": self.embed_dim,
            "lstm_units": self.lstm_units,
            "attention_dim": self.attention_dim,
            "dropout": self.dropout,
        }


class _GlobalDecoder(layers.Layer):
    """What inject and merge share: one vector per photo (the mean of the a_i), an embedding and an LSTM.

    Subclasses set how the vector enters: :meth:`prepare` (as the initial state,
    or projected for the output) and :meth:`output`.
    """

    has_attention = False

    def __init__(self, vocab_size: int, feature_dim: int = 512, embed_dim: int = 256, lstm_units: int = 512,
                 dropout: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.feature_dim = feature_dim
        self.embed_dim = embed_dim
        self.lstm_units = lstm_units
        self.dropout = dropout
        self.embedding = layers.Embedding(vocab_size, embed_dim, name="embedding")
        self.cell = layers.LSTMCell(lstm_units, name="lstm")
        self.logits = layers.Dense(vocab_size, name="logits")
        self.drop = layers.Dropout(dropout)

    def build(self, features_shape=None):
        self.embedding.build((None,))
        self.cell.build((None, self.embed_dim))
        self.build_image_side()
        self.built = True

    def step(self, tokens, h, c, features, projected, training=False):
        """y_{t-1}, (h, c)_{t-1} -> logits for y_t (B, V), (h, c)_t, and empty alpha and beta (B, 0)."""
        out, (h, c) = self.cell(self.embedding(tokens), [h, c], training=training)  # (B, n)
        none = ops.zeros_like(h[:, :0])
        return self.output(out, projected, training), h, c, none, none

    def call(self, features, tokens, training=False):
        """Teacher forcing: features (B, L, D), tokens (B, T) -> logits (B, T, V), alphas (B, T, 0)."""
        h, c, projected = self.prepare(features)

        def body(carry, token):
            _, (h, c) = self.cell(self.embedding(token), list(carry), training=training)  # the output is h
            return (h, c), (h, c)  # scan's TensorFlow version wants the outputs shaped like the carry

        _, (hs, _) = ops.scan(body, (h, c), ops.transpose(tokens))  # (T, B, n)
        outs = ops.transpose(hs, (1, 0, 2))  # (B, T, n)
        logits = self.output(outs, ops.expand_dims(projected, 1), training)  # (B, T, V)
        return logits, ops.zeros_like(logits[..., :0])

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "feature_dim": self.feature_dim,
                "embed_dim": self.embed_dim, "lstm_units": self.lstm_units, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package=PACKAGE)
class InjectDecoder(_GlobalDecoder):
    """Show and Tell (Vinyals et al., 2015), "init-inject": the image sets the LSTM's initial state.

    h_0 = tanh(W_h v), c_0 = tanh(W_c v), v the mean annotation vector; then
    p(y_t) ~ exp(W_o h_t): after the first step the image reaches a word only
    through the LSTM's memory.
    """

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(vocab_size, **kwargs)
        self.init_h = layers.Dense(self.lstm_units, activation="tanh", name="init_h")  # W_h
        self.init_c = layers.Dense(self.lstm_units, activation="tanh", name="init_c")  # W_c

    def build_image_side(self):
        self.init_h.build((None, self.feature_dim))
        self.init_c.build((None, self.feature_dim))
        self.logits.build((None, self.lstm_units))

    def prepare(self, features):
        """features (B, L, D) -> h_0, c_0 (B, n); ``projected`` is unused, (B, 0)."""
        image = ops.mean(features, axis=1)  # (B, D)
        return self.init_h(image), self.init_c(image), image[:, :0]

    def output(self, out, projected, training=False):
        return self.logits(self.drop(out, training=training))  # (..., V)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MergeDecoder(_GlobalDecoder):
    """The merge design (Tanti et al., 2018): the LSTM encodes the words only; the image joins at the output.

    h_t = LSTM(E y_{t-1}, h_{t-1}) from a zero state; p(y_t) ~ exp(W_o relu(W_m (h_t + relu(W_v v)))).
    """

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(vocab_size, **kwargs)
        self.image_proj = layers.Dense(self.lstm_units, activation="relu", name="image_proj")  # W_v
        self.merge = layers.Dense(self.embed_dim, activation="relu", name="merge")  # W_m

    def build_image_side(self):
        self.image_proj.build((None, self.feature_dim))
        self.merge.build((None, self.lstm_units))
        self.logits.build((None, self.embed_dim))

    def prepare(self, features):
        """features (B, L, D) -> zero h_0, c_0 (B, n), and the image projected once, relu(W_v v) (B, n)."""
        image = self.image_proj(ops.mean(features, axis=1))  # (B, n)
        zeros = ops.zeros_like(image)
        return zeros, zeros, image

    def output(self, out, projected, training=False):
        merged = self.merge(self.drop(out + projected, training=training))  # (..., m): words + image, added
        return self.logits(self.drop(merged, training=training))  # (..., V)


DECODERS = {"attention": AttentionDecoder, "inject": InjectDecoder, "merge": MergeDecoder}


@keras.saving.register_keras_serializable(package=PACKAGE)
class EnsembleDecoder(layers.Layer):
    """K decoders of one design, trained apart, read the same photo and choose each word together.

    Each word's distribution is the mean of the members' (a mixture: log of
    the mean of their softmaxes), so a word one member alone is sure of must
    convince the others. Every member keeps its own LSTM state: :meth:`prepare`
    and :meth:`step` carry the K states side by side in one (B, K n) array, and
    the projections W_a a_i likewise (B, L, K A), so greedy, beam search and the
    teacher view drive an ensemble exactly as they drive one decoder, in one
    compiled step. alpha and beta are the members' means: the attention maps
    show where the ensemble as a whole looked.

    Ensembles are built from trained folders (``python -m captioner ensemble``);
    they are not trained as a whole.
    """

    def __init__(self, members: list, **kwargs):
        super().__init__(**kwargs)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 decoders, not {len(members)}")
        self.members = [keras.saving.deserialize_keras_object(m) if isinstance(m, dict) else m for m in members]
        first = self.members[0]
        if any(type(m) is not type(first) or m.get_config() | {"name": ""} != first.get_config() | {"name": ""}
               for m in self.members):
            raise ValueError("the members of an ensemble must be decoders of one design and size")
        self.has_attention = first.has_attention  # the attention penalty of CaptionModel reads it

    def build(self, features_shape=None):
        for member in self.members:
            if not member.built:
                member.build()
        self.built = True

    def _mean(self, logits):
        """K members' logits, each (..., V) -> the log of their mean probability (..., V): valid logits."""
        log_probs = ops.stack([ops.log_softmax(ops.cast(x, "float32"), axis=-1) for x in logits])  # (K, ..., V)
        return ops.logsumexp(log_probs, axis=0) - ops.log(float(len(self.members)))

    def prepare(self, features):
        """features (B, L, D) -> h_0, c_0 (B, K n) and projected (B, L, K A): the members' side by side."""
        h, c, projected = zip(*(m.prepare(features) for m in self.members))
        return ops.concatenate(h, axis=-1), ops.concatenate(c, axis=-1), ops.concatenate(projected, axis=-1)

    def step(self, tokens, h, c, features, projected, training=False):
        """As a member's step: logits (B, V) (the log of the members' mean probability), (h, c)_t (B, K n),
        alpha (B, L) and beta (B, 1) averaged over the members."""
        k = len(self.members)
        hs, cs, ps = (ops.split(x, k, axis=-1) for x in (h, c, projected))
        steps = [m.step(tokens, hs[i], cs[i], features, ps[i], training) for i, m in enumerate(self.members)]
        logits, h, c, alpha, beta = zip(*steps)
        mean = lambda xs: ops.mean(ops.stack(xs), axis=0)  # noqa: E731
        return (self._mean(logits), ops.concatenate(h, axis=-1), ops.concatenate(c, axis=-1), mean(alpha),
                mean(beta))

    def call(self, features, tokens, training=False):
        """Teacher forcing: the members' mean distribution (B, T, V) and mean attention (B, T, L)."""
        logits, alphas = zip(*(m(features, tokens, training=training) for m in self.members))
        return self._mean(logits), ops.mean(ops.stack(alphas), axis=0)

    def get_config(self):
        return {**super().get_config(),
                "members": [keras.saving.serialize_keras_object(m) for m in self.members]}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CaptionModel(keras.Model):
    """The decoder as a Keras model: what ``fit`` trains and what the weight files hold.

    ``fit`` gets batches ``{"features": (B, L, D), "captions": (B, T + 1)}``
    (``<start> w_1 .. w_n <end> <pad> ..``); :meth:`call` runs teacher forcing
    on all but the last token and :meth:`compute_loss` scores the prediction
    of every next token, so Keras's own ``train_step`` does the rest on any
    backend.
    """

    def __init__(self, decoder: layers.Layer, alpha_c: float = 1.0, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.decoder = decoder
        self.alpha_c = alpha_c
        self.label_smoothing = label_smoothing
        self.xent_tracker = keras.metrics.Mean(name="xent")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    def build(self, input_shape=None):
        if not self.decoder.built:
            self.decoder.build()
        self.built = True

    def region_features(self, features):
        """The annotation vectors the decoder reads, from the features a batch holds: the same here."""
        return features

    def call(self, inputs, training=False):
        features = ops.cast(inputs["features"], "float32")  # (B, L, D), cached as float16
        return self.decoder(features, inputs["captions"][:, :-1], training=training)  # (B, T, V), (B, T, L)

    def losses_of(self, captions, logits, alphas):
        """(loss, cross-entropy, accuracy) of teacher-forced predictions for ``captions`` (B, T + 1)."""
        targets = captions[:, 1:]  # (B, T): the word each step should predict
        mask = ops.cast(ops.not_equal(targets, 0), "float32")  # <pad> is id 0
        logits, alphas = ops.cast(logits, "float32"), ops.cast(alphas, "float32")  # losses in float32
        if self.label_smoothing:
            vocab = ops.shape(logits)[-1]
            labels = ops.one_hot(targets, vocab) * (1.0 - self.label_smoothing)
            labels = labels + self.label_smoothing / ops.cast(vocab, "float32")
            xent = keras.losses.categorical_crossentropy(labels, logits, from_logits=True)  # (B, T)
        else:  # the same value without a (B, T, V) one-hot tensor
            xent = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)  # (B, T)
        tokens = ops.maximum(ops.sum(mask), 1.0)
        xent = ops.sum(xent * mask) / tokens  # divided by real tokens, not padding
        # Doubly stochastic attention (eq. 14): lambda * sum_i (1 - sum_t alpha_ti)^2,
        # averaged over regions and photos; padded steps do not count. (No attention, no penalty.)
        penalty = 0.0
        if self.alpha_c and self.decoder.has_attention:
            coverage = ops.sum(alphas * ops.expand_dims(mask, -1), axis=1)  # (B, L)
            penalty = self.alpha_c * ops.mean(ops.square(1.0 - coverage))
        correct = ops.cast(ops.equal(ops.argmax(logits, -1), ops.cast(targets, "int32")), "float32")
        accuracy = ops.sum(correct * mask) / tokens
        return xent + penalty, xent, accuracy

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss, xent, accuracy = self.losses_of(x["captions"], *y_pred)
        self.xent_tracker.update_state(xent)
        self.accuracy_tracker.update_state(accuracy)
        return loss

    def caption_losses(self, features, captions, training=False):
        """(loss, cross-entropy, accuracy) for one batch, outside ``fit``."""
        return self.losses_of(captions, *self({"features": features, "captions": captions}, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "alpha_c": self.alpha_c,
            "label_smoothing": self.label_smoothing,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SelfCriticalModel(CaptionModel):
    """The same decoder trained by self-critical sequence training (SCST; Rennie et al., 2017).

    ``fit`` gets batches of captions the decoder itself sampled,
    ``{"features": (N, L, D), "captions": (N, T + 1), "end_blocked": (N, T), "advantage": (N,),
    "reward": (N,)}`` (and ``"repeat_blocked"`` (N, T, R) where the sampler blocked repeats), where
    ``advantage`` is each caption's CIDEr-D reward minus the mean reward of the other captions sampled
    for the same photo. The loss is the policy
    gradient -sum_t A log pi(w_t | w_<t, a), over the real tokens (the ``<end>``
    included), divided by their count, where pi is the distribution the
    sampler drew from (:meth:`sampling_policy`: p without the special tokens,
    without ``<end>`` where ``end_blocked``, and without the words ``repeat_blocked`` names), plus ``xe_weight`` times the
    cross-entropy of one human reference per photo (batches then also hold
    ``"references"`` (B, T + 1) and ``"reference_features"`` (B, L, D)); dropout is off (the sampler ran without
    it), and so is the attention penalty of eq. 14: after cross-entropy it is
    several times the policy-gradient loss (about 0.8 for 11 words over 196
    regions, a sum that cannot reach 1 per region), so its gradient would rule.
    Everything else, the weights included, is :class:`CaptionModel`'s.
    """

    def __init__(self, decoder: layers.Layer, xe_weight: float = 0.0, **kwargs):
        kwargs.pop("alpha_c", None)  # no attention penalty: beside the small policy-gradient loss it would rule
        super().__init__(decoder, alpha_c=0.0, **kwargs)
        self.xe_weight = xe_weight
        self.reward_tracker = keras.metrics.Mean(name="reward")

    @property
    def metrics(self):  # the loss, the reward, and the references' cross-entropy if it is part of the loss
        drop = [self.accuracy_tracker] + ([] if self.xe_weight else [self.xent_tracker])
        return [m for m in super().metrics if all(m is not d for d in drop)]

    def call(self, inputs, training=False):
        return super().call(inputs, training=False)  # no dropout: the gradient is that of the sampling policy

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, alphas = y_pred
        targets = x["captions"][:, 1:]  # (N, T)
        mask = ops.cast(ops.not_equal(targets, 0), "float32")
        logits = self.sampling_policy(ops.cast(logits, "float32"), x["end_blocked"], x.get("repeat_blocked"))
        log_p = -keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)  # (N, T)
        advantage = ops.expand_dims(ops.cast(x["advantage"], "float32"), 1)  # (N, 1)
        loss = -ops.sum(advantage * log_p * mask) / ops.maximum(ops.sum(mask), 1.0)
        self.reward_tracker.update_state(x["reward"])
        if self.xe_weight:  # a little cross-entropy on a human reference per photo keeps the language whole
            references = {"features": x["reference_features"], "captions": x["references"]}
            _, xent, _ = self.losses_of(x["references"], *self(references))
            self.xent_tracker.update_state(xent)
            loss = loss + self.xe_weight * xent
        return loss

    @staticmethod
    def sampling_policy(logits, end_blocked, repeat_blocked=None):
        """The logits (N, T, V) of the distribution the sampler drew from: ``<pad>``, ``<start>`` and
        ``<unk>`` never, ``<end>`` not where ``end_blocked`` (N, T) is 1, and not the ids that
        ``repeat_blocked`` (N, T, R), padded with -1, names at each step (see :func:`~captioner.decoding.sample`)."""
        vocab = ops.shape(logits)[-1]
        never = ops.one_hot(ops.convert_to_tensor([PAD_ID, START_ID, UNK_ID]), vocab)  # (3, V)
        end = ops.one_hot(ops.convert_to_tensor(END_ID), vocab)  # (V,)
        blocked = ops.cast(end_blocked, "float32")[..., None] * end  # (N, T, V)
        if repeat_blocked is not None:  # -1 is a zero row of one_hot: padding blocks nothing
            repeats = ops.sum(ops.one_hot(ops.cast(repeat_blocked, "int32"), vocab), axis=2)  # (N, T, V)
            blocked = ops.maximum(blocked, ops.minimum(repeats, 1.0))
        return logits + BLOCKED * (ops.sum(never, axis=0) + blocked)

    def get_config(self):
        return {**super().get_config(), "xe_weight": self.xe_weight}


BLOCK5 = ("block5_conv1", "block5_conv2", "block5_conv3")  # VGG16's last block, up to the shipped layer
BELOW_BLOCK5 = "block4_pool"  # its input: 14 x 14 x 512, like its output, for a 224 photo


@keras.saving.register_keras_serializable(package=PACKAGE)
class Block5(layers.Layer):
    """VGG16's block5 (three 3 x 3 convolutions with ReLU) on region rows: (B, L, D) -> (B, L, D).

    Reads ``block4_pool`` features as cached for training, (B, G * G, 512), and gives what
    ``block5_conv3`` of the whole encoder gives, so its weights go back into the encoder unchanged.
    """

    def __init__(self, grid: int = 14, width: int = 512, **kwargs):
        super().__init__(**kwargs)
        self.grid, self.width = grid, width
        self.convs = [layers.Conv2D(width, 3, padding="same", activation="relu", name=name) for name in BLOCK5]

    def build(self, input_shape=None):
        shape = (None, self.grid, self.grid, self.width)
        for conv in self.convs:
            conv.build(shape)
        self.built = True

    def call(self, regions):
        x = ops.reshape(ops.cast(regions, self.compute_dtype), (-1, self.grid, self.grid, self.width))  # (B, G, G, D)
        for conv in self.convs:
            x = conv(x)
        return ops.reshape(x, (-1, self.grid * self.grid, self.width))  # (B, L, D)

    def load_from_encoder(self, encoder) -> None:
        """Take block5's weights from a whole VGG16 encoder (:func:`captioner.encoder.build_encoder`)."""
        for conv in self.convs:
            conv.set_weights(encoder.get_layer(conv.name).get_weights())

    def store_in_encoder(self, encoder) -> None:
        """Put these weights into a whole VGG16 encoder, in place of its block5."""
        for conv in self.convs:
            target = encoder.get_layer(conv.name)
            target.set_weights([w.astype(target.variables[0].dtype) for w in conv.get_weights()])

    def get_config(self):
        return {**super().get_config(), "grid": self.grid, "width": self.width}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FinetuneModel(CaptionModel):
    """The decoder and VGG16's block5, trained by cross-entropy on cached ``block4_pool`` features
    (both, or block5 alone with the decoder frozen: ``TrainConfig.finetune_decoder``).

    ``fit`` gets batches of photos with all their captions:
    ``{"features": (P, L, D) block4_pool rows, "captions": (N, T + 1), "rows": (N,)}``, where
    ``rows[i]`` is the photo of caption ``i``, so block5 runs once per photo, not once per caption
    (it costs about 2.8 GFLOP a photo forward, three times that with its gradient).
    Loss and metrics are :class:`CaptionModel`'s.
    """

    def __init__(self, decoder: layers.Layer, block5: layers.Layer | None = None, **kwargs):
        super().__init__(decoder, **kwargs)
        self.block5 = block5 or Block5(name="block5")

    def build(self, input_shape=None):
        if not self.block5.built:
            self.block5.build()
        super().build(input_shape)

    def region_features(self, features):
        """block4_pool rows (B, L, D) -> the block5_conv3 rows (B, L, D) the decoder reads."""
        return self.block5(features)

    def call(self, inputs, training=False):
        regions = self.block5(inputs["features"])  # (P, L, D): a_i of each photo
        regions = ops.take(regions, inputs["rows"], axis=0)  # (N, L, D): each caption's photo
        return self.decoder(ops.cast(regions, "float32"), inputs["captions"][:, :-1], training=training)

    def get_config(self):
        return {**super().get_config(), "block5": keras.saving.serialize_keras_object(self.block5)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("decoder", "block5"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_decoder(config: ModelConfig, vocab_size: int) -> layers.Layer:
    """The decoder ``config.decoder`` names: its width D comes from the encoder, its vocabulary from vocab.json."""
    if vocab_size < 5:
        raise ValueError(f"vocab_size must count <pad>, <start>, <end>, <unk> and a word, not {vocab_size}")
    if config.decoder not in DECODERS:
        raise ValueError(f"unknown decoder {config.decoder!r}: one of {', '.join(DECODERS)}")
    sizes = dict(vocab_size=vocab_size, feature_dim=feature_shape(config)[-1], embed_dim=config.embed_dim,
                 lstm_units=config.lstm_units, dropout=config.dropout, name="decoder")
    if config.decoder == "attention":
        sizes["attention_dim"] = config.attention_dim
    if config.ensemble < 1:
        raise ValueError(f"ensemble counts decoders: at least 1, not {config.ensemble}")
    if config.ensemble > 1:  # member k's weights are stored under decoder/member{k}/...
        decoder = EnsembleDecoder([DECODERS[config.decoder](**{**sizes, "name": f"member{k}"})
                                   for k in range(config.ensemble)], name="decoder")
    else:
        decoder = DECODERS[config.decoder](**sizes)
    decoder.build()
    return decoder


def build_model(config: ModelConfig, vocab_size: int, alpha_c: float = 1.0,
                label_smoothing: float = 0.0) -> CaptionModel:
    """A fresh, built :class:`CaptionModel` for ``config`` and a vocabulary of ``vocab_size`` words."""
    model = CaptionModel(build_decoder(config, vocab_size), alpha_c=alpha_c, label_smoothing=label_smoothing,
                         name="captioner")
    model.build()
    return model


def save_model_weights(model: CaptionModel, path, max_shard_size: float | None = None,
                       dtype: str = "float32") -> None:
    """The model's weights alone (a compiled model would also write its optimizer's state, 3x the size).

    With ``max_shard_size`` (in GB), ``path`` ends in ``.weights.json`` and the
    weights go to shards of at most that size beside it (see Keras's ``save_weights``).
    ``dtype="float16"`` stores them at half the size (an ensemble's K decoders); loading casts
    them back to the model's own float32, so round them first (:func:`round_to_float16`) to
    measure the model the file holds.
    """
    clone = lambda layer: keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))  # noqa: E731
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)  # the clone's layers, sublayers included, keep their weights in dtype
    try:
        if isinstance(model, FinetuneModel):  # the decoder and block5
            clean = FinetuneModel(clone(model.decoder), clone(model.block5), name=model.name)
        else:  # a plain CaptionModel, whatever trained it
            clean = CaptionModel(clone(model.decoder), name=model.name)
        clean.build()
    finally:
        keras.config.set_dtype_policy(policy)
    if any(w.dtype != dtype for w in clean.weights):  # a layer whose config names its own dtype
        raise ValueError(f"could not store every weight as {dtype}")
    clean.set_weights(model.get_weights())  # cast on assignment
    clean.save_weights(path, max_shard_size=max_shard_size)


def round_to_float16(model: keras.Model) -> None:
    """Round every weight of ``model`` to the nearest float16 value (kept in its own dtype), so that what
    is measured on it is what a float16 weights file of it gives back."""
    model.set_weights([np.asarray(w).astype(np.float16).astype(w.dtype) for w in model.get_weights()])
