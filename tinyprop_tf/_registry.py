"""Keras registration of the policy and schedule classes, deferred until Keras is in use.

Policies and schedules are plain, validated descriptions; parsing one (``tinyprop finetune --policy ...``) must
not load TensorFlow, which takes seconds. So their classes are only *marked* here at definition, and
registered with Keras (package ``tinyprop_tf``) by ``register_with_keras()``: the sparse layers' module calls
it on import, and so does every function here that hands a policy or schedule to Keras' (de)serialisation.
"""

from __future__ import annotations

_MARKED: list[type] = []
_registered = False


def keras_serializable(cls: type) -> type:
    """Class decorator: register ``cls`` with Keras as ``tinyprop_tf>ClassName`` once Keras is used."""
    _MARKED.append(cls)
    if _registered:  # defined after registration ran (a late import): register it now
        _register(cls)
    return cls


def _register(cls):
    import keras

    keras.saving.register_keras_serializable(package="tinyprop_tf")(cls)


def register_with_keras() -> None:
    """Register every marked class (idempotent; imports Keras)."""
    global _registered
    for cls in _MARKED:
        _register(cls)
    _registered = True
